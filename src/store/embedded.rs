//! The embedded default backend: a SQLite file.
use super::{ActiveModel, ChangeCursor, Changes, Error, KeySummary, ModelStore, StoredModel};

/// A model store in a local SQLite file.
#[derive(Debug)]
pub struct EmbeddedModelStore {
    path: String,
}

impl EmbeddedModelStore {
    /// Opens (creating if needed) the SQLite file at `path`.
    pub fn open(path: &str) -> Result<Self, Error> {
        Ok(Self {
            path: path.to_string(),
        })
    }
}

#[async_trait::async_trait]
impl ModelStore for EmbeddedModelStore {
    fn describe(&self) -> String {
        format!("sqlite://{}", self.path)
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
