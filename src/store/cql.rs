//! ScyllaDB / Cassandra backend on the scylla driver.
use super::{ActiveModel, ChangeCursor, Changes, Error, KeySummary, ModelStore, StoredModel};

/// A model store in a ScyllaDB or Cassandra keyspace.
#[derive(Debug)]
pub struct CqlModelStore {
    path: String,
}

impl CqlModelStore {
    /// Connects to `HOSTS/KEYSPACE`.
    pub async fn connect(path: &str) -> Result<Self, Error> {
        Ok(Self {
            path: path.to_string(),
        })
    }
}

#[async_trait::async_trait]
impl ModelStore for CqlModelStore {
    fn describe(&self) -> String {
        format!("cql://{}", self.path)
    }
    async fn init(&self) -> Result<(), Error> {
        Err(Error::Unavailable("not implemented".into()))
    }
    async fn put_version(
        &self,
        _key: &str,
        _version: Option<i64>,
        _spec_json: &str,
    ) -> Result<i64, Error> {
        Err(Error::Unavailable("not implemented".into()))
    }
    async fn activate(&self, _key: &str, _version: i64) -> Result<(), Error> {
        Err(Error::Unavailable("not implemented".into()))
    }
    async fn rollback(&self, _key: &str) -> Result<i64, Error> {
        Err(Error::Unavailable("not implemented".into()))
    }
    async fn active(&self, _key: &str) -> Result<Option<ActiveModel>, Error> {
        Err(Error::Unavailable("not implemented".into()))
    }
    async fn version(&self, _key: &str, _version: i64) -> Result<Option<StoredModel>, Error> {
        Err(Error::Unavailable("not implemented".into()))
    }
    async fn list(&self) -> Result<Vec<KeySummary>, Error> {
        Err(Error::Unavailable("not implemented".into()))
    }
    async fn cursor(&self) -> Result<ChangeCursor, Error> {
        Err(Error::Unavailable("not implemented".into()))
    }
    async fn changes_since(&self, _cursor: ChangeCursor) -> Result<Changes, Error> {
        Err(Error::Unavailable("not implemented".into()))
    }
}
