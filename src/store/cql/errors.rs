//! How driver and database errors become [`Error`]s: a request the database refuses is
//! [`Error::Rejected`], an unreachable, overloaded or slow cluster is [`Error::Unavailable`],
//! data keyscore cannot decode is [`Error::Corrupt`]. The driver's error is kept as the source.

use scylla::errors::{DbError, ExecutionError, NewSessionError, RequestAttemptError};

use super::config::CqlConfig;
use crate::store::Error;

/// Maps a failure to open the session.
pub(super) fn session_error(config: &CqlConfig, err: NewSessionError) -> Error {
    match err {
        NewSessionError::EmptyKnownNodesList | NewSessionError::IllegalConfig(_) => {
            Error::Url(format!("cannot connect to {}: {err}", config.describe()))
        }
        _ => Error::unavailable_from(
            format!(
                "cannot connect to {}; check that the hosts are up and reachable, if the \
                 cluster requires TLS, [store.cql] tls_ca_file (KEYSCORE_CQL_TLS_CA_FILE) and, \
                 if it requires a login, KEYSCORE_CQL_USERNAME and KEYSCORE_CQL_PASSWORD",
                config.describe()
            ),
            err,
        ),
    }
}

/// Maps a request failure: the database refusing the request is [`Error::Rejected`], an
/// unreachable, overloaded or slow cluster is [`Error::Unavailable`].
pub(super) fn execution_error(context: &str, err: ExecutionError) -> Error {
    let db_error = match &err {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, message)) => {
            Some((db, message))
        }
        ExecutionError::PrepareError(scylla::errors::PrepareError::AllAttemptsFailed {
            first_attempt: RequestAttemptError::DbError(db, message),
        }) => Some((db, message)),
        _ => None,
    };
    let Some((db, message)) = db_error else {
        return match err {
            ExecutionError::LastAttemptError(RequestAttemptError::CqlResultParseError(_)) => {
                Error::corrupt_from(context, err)
            }
            ExecutionError::BadQuery(_) => Error::rejected_from(context, err),
            _ => Error::unavailable_from(context, err),
        };
    };
    match db {
        DbError::Unavailable { .. }
        | DbError::Overloaded
        | DbError::IsBootstrapping
        | DbError::ReadTimeout { .. }
        | DbError::WriteTimeout { .. }
        | DbError::ReadFailure { .. }
        | DbError::WriteFailure { .. }
        | DbError::ServerError
        | DbError::TruncateError
        | DbError::RateLimitReached { .. } => {
            Error::unavailable_from(format!("{context}: the database failed"), err)
        }
        DbError::Unauthorized | DbError::AuthenticationError => Error::rejected_from(
            format!(
                "{context}: the database refused the login or the permission; check \
                 KEYSCORE_CQL_USERNAME and the role's grants"
            ),
            err,
        ),
        DbError::Invalid
            if message.contains("unconfigured table")
                || message.contains("does not exist")
                || message.contains("Keyspace") =>
        {
            Error::rejected_from(
                format!(
                    "{context}: the keyscore schema is missing; run `keyscore init` against \
                     this store first"
                ),
                err,
            )
        }
        _ => Error::rejected_from(format!("{context}: the database refused the request"), err),
    }
}

/// Maps a failure of a paged read.
pub(super) fn pager_error(context: &str, err: scylla::errors::PagerExecutionError) -> Error {
    use scylla::errors::{NextPageError, PagerExecutionError, RequestError};
    match err {
        PagerExecutionError::PrepareError(err) => {
            execution_error(context, ExecutionError::PrepareError(err))
        }
        PagerExecutionError::NextPageError(NextPageError::RequestFailure(err)) => {
            execution_error(context, RequestError::into_execution_error(err))
        }
        PagerExecutionError::NextPageError(
            err @ (NextPageError::ResultMetadataParseError(_) | NextPageError::TypeCheckError(_)),
        ) => corrupt(context, err),
        err => Error::unavailable_from(context, err),
    }
}

/// Maps a failure to read the next row of a paged read.
pub(super) fn row_error(context: &str, err: scylla::errors::NextRowError) -> Error {
    use scylla::errors::{NextRowError, PagerExecutionError};
    match err {
        NextRowError::NextPageError(err) => {
            pager_error(context, PagerExecutionError::NextPageError(err))
        }
        err => corrupt(context, err),
    }
}

/// Data the database returned that keyscore cannot read.
pub(super) fn corrupt(context: &str, err: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::corrupt_from(
        format!(
            "{context}: unexpected data from the database; check that the tables match cql/*.cql"
        ),
        err,
    )
}
