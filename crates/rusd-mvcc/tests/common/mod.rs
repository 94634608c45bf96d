//! Helpers shared by the integration tests (included with `mod common;`).
#![allow(dead_code, missing_docs)]

use rusd_mvcc::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyValue, MvccStore, PutRequest,
    RangeRequest, StoreConfig,
};

pub struct TestStore {
    pub store: MvccStore,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for TestStore {
    type Target = MvccStore;
    fn deref(&self) -> &MvccStore {
        &self.store
    }
}

pub fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig::new(dir.join("db"))
}

pub fn open() -> TestStore {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MvccStore::open(config(dir.path())).expect("open");
    TestStore { store, dir }
}

impl TestStore {
    pub fn reopen(self) -> TestStore {
        self.store.close().expect("close");
        let TestStore { store, dir } = self;
        drop(store);
        let store = MvccStore::open(config(dir.path())).expect("reopen");
        TestStore { store, dir }
    }

    pub fn set(&self, k: &str, v: &str) -> i64 {
        self.store
            .put(&PutRequest::new(k, v))
            .expect("put")
            .revision
    }

    pub fn del(&self, k: &str, end: &str) -> i64 {
        self.store
            .delete_range(&DeleteRangeRequest::new(k, end))
            .expect("delete")
            .deleted
    }

    pub fn get(&self, k: &str) -> Option<KeyValue> {
        self.store
            .range(&RangeRequest::new(k, ""))
            .expect("range")
            .kvs
            .pop()
    }

    pub fn get_at(&self, k: &str, rev: i64) -> Option<KeyValue> {
        self.store
            .range(&RangeRequest {
                revision: rev,
                ..RangeRequest::new(k, "")
            })
            .expect("range")
            .kvs
            .pop()
    }

    pub fn keys(&self, k: &str, end: &str) -> Vec<String> {
        self.store
            .range(&RangeRequest::new(k, end))
            .expect("range")
            .kvs
            .into_iter()
            .map(|kv| String::from_utf8(kv.key).expect("utf8"))
            .collect()
    }
}

pub fn cmp(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare {
        result,
        target,
        key: key.into(),
        range_end: Vec::new(),
    }
}
