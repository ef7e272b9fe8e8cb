"""A local Snowflake emulator for the real JDBC driver and spark-snowflake connector: fakesnow's
server mode (DuckDB behind Snowflake's HTTP protocol), extended here, on the test side, with
what the connector needs and fakesnow does not implement.

Run:  python tests/sfemu.py PORT   (prints "ready PORT" when it accepts connections)
"""

from __future__ import annotations

import logging
import re
import sys

import base64
import gzip
import json
import os

# the stage master key this emulator hands out with every PUT: the JDBC driver's GCS client
# encrypts each file it uploads (AES-CBC, the file key wrapped with this key, AES-ECB), and
# the upload route below decrypts it before fakesnow stores it
MASTER_KEY = os.urandom(16)

# statements the connector issues for session setup that the emulator need not act on
NOP_REGEXES = [r"^\s*ALTER\s+SESSION\b", r"^\s*USE\s+WAREHOUSE\b", r"^\s*USE\s+ROLE\b",
               # at application end the connector cancels the queries it still tracks
               r"^\s*select\s+SYSTEM\$CANCEL_QUERY\("]


# the connector learns its temporary stage's kind with `GET @stage/ file:///tmp/dummy.../`
_GET_PROBE = re.compile(r"^\s*GET\s+(@\S+?)/?\s+'?file://(/[^\s']*)", re.I)


# the store's Snowflake Scripting block: EXECUTE IMMEDIATE $$ BEGIN BEGIN TRANSACTION; ...; COMMIT; END; $$
_BLOCK = re.compile(r"^\s*EXECUTE\s+IMMEDIATE\s+\$\$\s*BEGIN\s+BEGIN\s+TRANSACTION\s*;(?P<body>.*)"
                    r"\bCOMMIT\s*;\s*END\s*;\s*\$\$\s*$", re.I | re.S)


def scripting_block(sql: str) -> list[str] | None:
    """The statements of a transaction block (fakesnow does not run Snowflake Scripting)."""
    m = _BLOCK.match(sql)
    if not m:
        return None
    return [x.strip() for x in m.group("body").split(";\n") if x.strip().rstrip(";")]


def insert_only_merge(sql: str) -> str | None:
    """An insert-only MERGE (one WHEN NOT MATCHED THEN INSERT) as the INSERT ... WHERE NOT
    EXISTS it means, or None for any other statement. fakesnow runs a MERGE as several
    statements around a temporary table whose bookkeeping it writes to its own global database,
    which DuckDB refuses inside a transaction that already wrote the user's database ("a single
    transaction can only write to a single attached database"); Snowflake runs a MERGE in a
    transaction like any DML, so inside a block the emulator runs its plain equivalent."""
    import sqlglot
    from sqlglot import exp

    if not re.match(r"^\s*MERGE\s", sql, re.I):
        return None
    merge = sqlglot.parse_one(sql, read="snowflake")
    whens = merge.args.get("whens")
    whens = list(getattr(whens, "expressions", whens) or [])
    if not isinstance(merge, exp.Merge) or len(whens) != 1 or whens[0].args.get("matched") \
            or whens[0].args.get("condition") is not None or not isinstance(whens[0].args.get("then"), exp.Insert):
        return None
    insert, target, source = whens[0].args["then"], merge.this, merge.args["using"]
    into = target.copy()
    into.set("alias", None)
    return (f"INSERT INTO {into.sql('snowflake')} {insert.this.sql('snowflake')} "
            f"SELECT {', '.join(v.sql('snowflake') for v in insert.expression.expressions)} "
            f"FROM {source.sql('snowflake')} WHERE NOT EXISTS "
            f"(SELECT 1 FROM {target.sql('snowflake')} WHERE {merge.args['on'].sql('snowflake')})")


def run_block(conn, statements: list[str]) -> None:
    """All statements in one transaction on this session: all applied, or none."""
    cur = conn.cursor()
    cur.execute("BEGIN TRANSACTION")
    try:
        for stmt in statements:
            stmt = stmt.rstrip(";")
            cur.execute(exact_parse_json(insert_only_merge(stmt) or stmt))
    except Exception:
        cur.execute("ROLLBACK")
        raise
    cur.execute("COMMIT")


_NAME = re.compile(r'^(?:"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)(?:\.(?:"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)){0,2}$')


def inline_identifiers(payload: dict) -> dict:
    """`identifier(?)` bound to a qualified name ('"DB"."SCHEMA"."T"'): fakesnow takes the whole
    text as one name (so the connector's `desc table identifier(?)` finds nothing and it creates
    a table literally named 'DB"."SCHEMA"."T'); Snowflake resolves the parts. Inline the name."""
    sql, bindings = payload["sqlText"], payload.get("bindings") or {}
    if "identifier(?)" not in sql.lower() or not bindings:
        return payload
    if sql.count("?") != len(bindings) or sql.lower().count("identifier(?)") != len(bindings):
        return payload
    for pos in range(1, len(bindings) + 1):
        name = str(bindings[str(pos)].get("value"))
        if not _NAME.match(name):
            return payload
        sql = re.sub(r"identifier\(\?\)", lambda _m, n=name: n, sql, count=1, flags=re.I)
    return {**payload, "sqlText": sql, "bindings": None}


def exact_parse_json(sql: str) -> str:
    """fakesnow runs PARSE_JSON as DuckDB's json(), which reads numbers as doubles
    (12.345678901234567891 -> 12.345678901234567); Snowflake keeps fixed-point numbers in a
    VARIANT. A cast of the column's JSON text keeps it exactly."""
    return re.sub(r'PARSE_JSON\(("[A-Za-z0-9_]+")\)', r"CAST(\1 AS VARIANT)", sql, flags=re.I)


def _rewrite(sql: str) -> tuple[str, dict]:
    """(the statement fakesnow runs instead, what to change in its answer)."""
    m = _GET_PROBE.match(sql)
    if m:   # answer as fakesnow answers a PUT to that stage: a GCS-style stage over HTTP
        return f"PUT file:///tmp/dummy_location_spark_connector_tmp/probe {m.group(1)}/", {"command": "DOWNLOAD", "localLocation": m.group(2),
                                                                                  "src_locations": [], "encryptionMaterial": []}
    sql = exact_parse_json(sql)
    if re.match(r"^\s*PUT\s", sql, re.I):
        return sql, {"encryptionMaterial": {"queryStageMasterKey": base64.b64encode(MASTER_KEY).decode(),
                                       "queryId": "fakesnow", "smkId": 0}}
    return sql, {}


# --- COPY INTO <table> FROM @stage: the connector's CSV load, done here ------------------------
# fakesnow's COPY reads CSV columns by name and implements neither the connector's
# TIMESTAMP_FORMAT / DATE_FORMAT / BINARY_FORMAT options nor its `select tmp.$1, ...` form, so the
# emulator loads the staged files itself, into the same DuckDB, with the connector's exact
# format, and answers with COPY's result columns (file, status, rows_parsed, rows_loaded).
_COPY = re.compile(
    r"^\s*copy\s+into\s+(?P<table>\S+)\s*\((?P<cols>[^)]*)\)\s*"
    r"(?:from\s*\(\s*select\s*(?P<sel>[^)]*?)\s*FROM\s+@(?P<stage1>[^/\s]+)/(?P<dir1>\S*?)/?\s+tmp\s*\)"
    r"|FROM\s+@(?P<stage2>[^/\s]+)/(?P<dir2>\S*?)/?\s)\s*(?:FILES\s*=\s*\((?P<files>[^)]*)\)\s*)?FILE_FORMAT\s*=\s*\((?P<fmt>(?:[^()']|'[^']*'|\(\))*)\)\s*(?P<rest>.*)$",
    re.I | re.S)
_CONNECTOR_CSV = ["TYPE=CSV", "FIELD_DELIMITER='|'", "NULL_IF=()", "FIELD_OPTIONALLY_ENCLOSED_BY='\"'",
                  "TIMESTAMP_FORMAT='TZHTZM YYYY-MM-DD HH24:MI:SS.FF9'",
                  "DATE_FORMAT='TZHTZM YYYY-MM-DD HH24:MI:SS.FF9'", "BINARY_FORMAT=BASE64"]
# a field in the connector's timestamp format 'TZHTZM YYYY-MM-DD HH24:MI:SS.FF9'
_TS = re.compile(r"^(Z|[+-]\d\d:?\d\d) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d{1,9}))?$")


class CopyUnsupported(ValueError):
    """A COPY the emulator does not load (it says which part); never a silent partial load."""


def parse_copy(sql: str) -> dict | None:
    m = _COPY.match(sql)
    if not m:
        return None
    fmt = [x.strip().replace(" ", "") for x in m.group("fmt").splitlines() if x.strip()]
    expected = [x.replace(" ", "") for x in _CONNECTOR_CSV]
    if fmt != expected:
        raise CopyUnsupported(f"file format {fmt}")
    if m.group("rest").strip():
        raise CopyUnsupported(f"COPY options {m.group('rest').strip()!r}")
    cols = [c.strip() for c in m.group("cols").split(",")]
    if m.group("sel") is not None:
        positions = [int(x) for x in re.findall(r"tmp\.\$(\d+)", m.group("sel"))]
        if positions != list(range(1, len(cols) + 1)):
            raise CopyUnsupported(f"column selection {m.group('sel')!r}")
    files = re.findall(r"'([^']*)'", m.group("files")) if m.group("files") else None
    return {"table": m.group("table"), "columns": cols, "files": files, "stage": m.group("stage1") or m.group("stage2"),
            "dir": (m.group("dir1") if m.group("sel") is not None else m.group("dir2")) or ""}


def split_csv(text: str) -> list[list[str | None]]:
    """The connector's CSV: '|' between fields, '\\n' between records, '"' encloses (doubled
    inside); an empty unenclosed field is NULL, an enclosed empty one ''."""
    rows, row, i, n = [], [], 0, len(text)
    while i < n:
        if text[i] == '"':
            j, buf = i + 1, []
            while True:
                k = text.index('"', j)
                buf.append(text[j:k])
                if k + 1 < n and text[k + 1] == '"':
                    buf.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            row.append("".join(buf))
        else:
            k = i
            while k < n and text[k] not in "|\n":
                k += 1
            row.append(text[i:k] if k > i else None)
            i = k
        if i < n and text[i] == "|":
            i += 1
            if i == n or text[i] == "\n":
                row.append(None)
        if i < n and text[i] == "\n":
            rows.append(row)
            row = []
            i += 1
    if row:
        rows.append(row)
    return rows


def plain_value(v: str | None) -> str | None:
    """A timestamp in the connector's format as UTC 'YYYY-MM-DD HH:MM:SS.ffffff' (TIMESTAMP_NTZ
    in UTC, the connector's sfTimezone); anything else as it is."""
    from datetime import datetime, timedelta

    if v is None:
        return None
    m = _TS.match(v)
    if not m:
        return v
    zone, head, frac = m.group(1), m.group(2), m.group(3) or ""
    value = datetime.strptime(head, "%Y-%m-%d %H:%M:%S")
    if zone != "Z":
        digits = zone[1:].replace(":", "")
        value -= (1 if zone[0] == "+" else -1) * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return f"{value:%Y-%m-%d %H:%M:%S}.{(frac + '000000')[:6]}"


def load_copy(duck, copy: dict) -> list[tuple[str, int]]:
    """Load every staged file of the COPY into its table in one DuckDB transaction."""
    import glob
    import tempfile

    from fakesnow.transforms import stage

    pattern = os.path.join(stage.LOCAL_BUCKET_PATH, "*", "*", copy["stage"].upper(), copy["dir"], "*")
    files = sorted(glob.glob(pattern))
    if copy["files"] is not None:
        named = set(copy["files"])
        files = [f for f in files if os.path.basename(f) in named]
        if len(files) != len(named):
            raise CopyUnsupported(f"staged files {sorted(named)} not all found at {pattern}")
    if not files:
        raise CopyUnsupported(f"no staged files at {pattern}")
    results, width = [], len(copy["columns"])
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False, encoding="utf-8") as out:
        for f in files:
            raw = gzip.decompress(open(f, "rb").read()) if f.lower().endswith(".gz") else open(f, "rb").read()
            rows = split_csv(raw.decode("utf-8"))
            for row in rows:
                if len(row) != width:
                    raise CopyUnsupported(f"{os.path.basename(f)}: a record of {len(row)} fields, expected {width}")
                out.write(",".join("\\N" if v is None else '"' + plain_value(v).replace('"', '""') + '"'
                                   for v in row) + "\n")
            rel = os.path.relpath(f, os.path.join(stage.LOCAL_BUCKET_PATH))
            results.append(("/".join(rel.split(os.sep)[2:]), len(rows)))
    try:
        cols = ", ".join(copy["columns"])
        parts = [p.strip('"') for p in re.findall(r'"[^"]+"|[^.]+', copy["table"])]
        types = dict(duck.execute(
            "SELECT upper(column_name), data_type FROM information_schema.columns WHERE table_catalog = ? "
            "AND table_schema = ? AND table_name = ?", [p.upper() for p in parts[-3:]]).fetchall())
        # BINARY_FORMAT=BASE64: binary columns arrive as base64 text
        select = ", ".join(f"from_base64(column{i})" if types.get(c.strip('"').upper()) == "BLOB" else f"column{i}"
                           for i, c in enumerate(copy["columns"]))
        duck.execute(f"INSERT INTO {copy['table']} ({cols}) SELECT {select} FROM read_csv('{out.name}', "
                     f"header=false, all_varchar=true, quote='\"', escape='\"', nullstr='\\N', "
                     f"allow_quoted_nulls=false, auto_detect=false, "
                     f"columns={{{', '.join(repr(f'column{i}') + ': ' + repr('VARCHAR') for i in range(width))}}})")
    finally:
        os.unlink(out.name)
    return results


def decrypt_upload(body: bytes, headers) -> bytes:
    """The plaintext of a file the JDBC driver encrypted for a stage (as Snowflake would)."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    meta = headers.get("x-goog-meta-encryptiondata")
    if not meta:
        return body
    info = json.loads(meta)
    wrapped = base64.b64decode(info["WrappedContentKey"]["EncryptedKey"])
    iv = base64.b64decode(info["ContentEncryptionIV"])

    def unpad(data: bytes) -> bytes:
        unpadder = padding.PKCS7(128).unpadder()
        return unpadder.update(data) + unpadder.finalize()

    dec = Cipher(algorithms.AES(MASTER_KEY), modes.ECB()).decryptor()
    file_key = unpad(dec.update(wrapped) + dec.finalize())
    dec = Cipher(algorithms.AES(file_key), modes.CBC(iv)).decryptor()
    return unpad(dec.update(body) + dec.finalize())


def build_app():

    import fakesnow.server as server
    from fakesnow.instance import FakeSnow
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    server.shared_fs = FakeSnow(nop_regexes=NOP_REGEXES)

    from starlette.concurrency import run_in_threadpool

    async def query_request(request: Request):
        body = await request.body()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        payload = json.loads(body)
        try:
            copy = parse_copy(payload["sqlText"])
        except CopyUnsupported as exc:
            copy = exc
        if copy is not None:
            conn = server.to_conn(server.to_token(request))
            try:
                if isinstance(copy, CopyUnsupported):
                    raise copy
                loaded = await run_in_threadpool(load_copy, conn._duck_conn, copy)
            except Exception as exc:   # a clear error to the client, like Snowflake's
                return JSONResponse({"data": {"errorCode": "100000", "sqlState": "22000"}, "code": "100000",
                                     "message": f"emulator COPY: {exc}", "success": False})
            payload["sqlText"] = " UNION ALL ".join(
                f"SELECT '{name}' AS \"file\", 'LOADED' AS \"status\", {n} AS \"rows_parsed\", "
                f"{n} AS \"rows_loaded\"" for name, n in loaded)
        block = scripting_block(payload["sqlText"])
        if block is not None:
            conn = server.to_conn(server.to_token(request))
            try:
                await run_in_threadpool(run_block, conn, block)
            except Exception as exc:
                return JSONResponse({"data": {"errorCode": "100132", "sqlState": "P0000"}, "code": "100132",
                                     "message": f"emulator block: {exc}", "success": False})
            payload["sqlText"] = 'SELECT NULL AS "anonymous block"'
        payload = inline_identifiers(payload)
        sql, patch = _rewrite(payload["sqlText"])
        payload["sqlText"] = sql
        new_body = json.dumps(payload).encode()
        headers = [(k, v) for k, v in request.scope["headers"] if k.lower() not in (b"content-encoding", b"content-length")]
        scope = dict(request.scope, headers=headers + [(b"content-length", str(len(new_body)).encode())])
        sent = False

        async def receive():
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": new_body, "more_body": False}

        response = await server.query_request(Request(scope, receive))
        if patch and isinstance(response, JSONResponse):
            answer = json.loads(response.body)
            if answer.get("success") and isinstance(answer.get("data"), dict):
                answer["data"].update(patch)
                return JSONResponse(answer)
        return response

    async def bucket_upload(request: Request):
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import Response

        body = decrypt_upload(await request.body(), request.headers)
        target = await run_in_threadpool(server._write_bucket_file, request.path_params["path"], body)
        return Response(status_code=200 if target else 400)

    ours = {"/queries/v1/query-request": Route("/queries/v1/query-request", query_request, methods=["POST"]),
            "/fs_bucket/{path:path}": Route("/fs_bucket/{path:path}", bucket_upload, methods=["PUT"])}
    routes = list(ours.values()) + [r for r in server.routes if getattr(r, "path", "") not in ours]
    from starlette.applications import Starlette

    return Starlette(routes=routes)


def main(argv: list[str]) -> int:
    import uvicorn

    port = int(argv[1])
    app = build_app()
    logging.basicConfig(level=logging.INFO)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    print(f"ready {port}", flush=True)
    srv.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
