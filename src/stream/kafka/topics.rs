//! Creating the topics `serve` and `produce` write to, when they are missing. Some brokers (and
//! clusters with `auto.create.topics.enable=false`) refuse records for unknown topics.

use std::time::Duration;

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    types::RDKafkaErrorCode,
};
use tracing::{debug, info};

use super::KafkaConfig;
use super::{options, Error};

/// Creates each of `topics` that does not exist, with `create_partitions` partitions and
/// `create_replication_factor` replicas. Existing topics are left as they are.
pub async fn ensure_topics(config: &KafkaConfig, topics: &[&str]) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> =
        options::plain_config(config)
            .create()
            .map_err(|source| Error::Client {
                client: "admin client",
                source,
            })?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                config.create_partitions,
                TopicReplication::Fixed(config.create_replication_factor),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .map_err(|err| Error::Topic {
            topic: topics.join(", "),
            message: err.to_string(),
        })?;
    for result in results {
        match result {
            Ok(topic) => info!(
                topic,
                partitions = config.create_partitions,
                "Created topic."
            ),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                debug!(topic, "Topic exists.");
            }
            Err((topic, code)) => {
                return Err(Error::Topic {
                    topic,
                    message: code.to_string(),
                })
            }
        }
    }
    Ok(())
}
