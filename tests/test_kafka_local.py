"""The local broker's own pieces that need no broker."""

from __future__ import annotations

import base64

from shopstream.kafka_local import new_cluster_id


def test_cluster_id_never_starts_with_a_dash():
    # 0xF8 makes the first base64 character '-': Kafka's storage tool then reads the id as an
    # option and fails ("argument --cluster-id/-t: expected one argument"), which stopped a test
    # broker from starting once in a full test run (1 random id in 64)
    dash = b"\xf8" + bytes(15)
    assert base64.urlsafe_b64encode(dash).decode().startswith("-")
    draws = iter([dash, dash, bytes(16)])
    assert new_cluster_id(lambda: next(draws)) == "A" * 22          # 16 zero bytes, unpadded
    assert all(not new_cluster_id().startswith("-") for _ in range(2000))
