"""Store implementations behind one interface (shopstream.stores.base.Store)."""
