//! In-process records: the default for a single replica.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{IdempotencyStore, Record, StoreError};

/// Records in a map, expired lazily.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<String, (Record, Instant)>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn sweep(map: &mut HashMap<String, (Record, Instant)>) {
        let now = Instant::now();
        // Cheap enough at the sizes one replica holds; keeps memory bounded
        // by the retention window.
        if map.len().is_multiple_of(64) {
            map.retain(|_, (_, until)| *until > now);
        }
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn claim(
        &self,
        key: &str,
        record: &Record,
        ttl: Duration,
    ) -> Result<Option<Record>, StoreError> {
        let mut map = self.records.lock();
        Self::sweep(&mut map);
        let now = Instant::now();
        match map.get(key) {
            Some((existing, until)) if *until > now => Ok(Some(existing.clone())),
            _ => {
                map.insert(key.to_string(), (record.clone(), now + ttl));
                Ok(None)
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let map = self.records.lock();
        Ok(map
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(r, _)| r.clone()))
    }

    async fn complete(
        &self,
        key: &str,
        token: &str,
        record: &Record,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut map = self.records.lock();
        if map.get(key).is_some_and(|(r, _)| r.token == token) {
            map.insert(key.to_string(), (record.clone(), Instant::now() + ttl));
        }
        Ok(())
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let mut map = self.records.lock();
        if map.get(key).is_some_and(|(r, _)| r.token == token) {
            map.remove(key);
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
