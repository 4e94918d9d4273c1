//! `crmbus topics (list|create|delete|show)`.

use clap::Subcommand;
use crmbus_client::api::{CreateTopicRequest, RetentionBody, TopicView};
use serde_json::json;

use crate::client::{block_on, opt, plural, print_json, print_table, Remote};

/// Topic commands.
#[derive(Subcommand, Debug)]
pub enum TopicsCommand {
    /// List every topic.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Partitions (default: the server's default_partitions).
        #[arg(long)]
        partitions: Option<u32>,
        /// Keep events this many hours at most.
        #[arg(long, value_name = "HOURS")]
        retention_hours: Option<u64>,
        /// Keep at most this many bytes per partition.
        #[arg(long, value_name = "BYTES")]
        retention_bytes: Option<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a topic and all its events.
    Delete {
        /// Topic name.
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a topic's partitions and offsets.
    Show {
        /// Topic name.
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
}

fn topic_row(t: &TopicView) -> Vec<String> {
    vec![
        t.name.clone(),
        t.partitions.to_string(),
        t.events.to_string(),
        t.retention
            .max_age_ms
            .map_or_else(|| "-".to_string(), human_duration),
        opt(t.retention.max_bytes),
    ]
}

const HEADER: [&str; 5] = ["NAME", "PARTITIONS", "EVENTS", "MAX_AGE", "MAX_BYTES"];

/// Milliseconds as the largest whole unit: `72h`, `90m`, `1500ms`.
fn human_duration(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    UNITS
        .iter()
        .find(|(size, _)| ms >= *size && ms.is_multiple_of(*size))
        .map_or_else(
            || format!("{ms}ms"),
            |(size, unit)| format!("{}{unit}", ms / size),
        )
}

/// Runs a topic command.
pub fn run(cmd: TopicsCommand) -> anyhow::Result<()> {
    block_on(async move {
        match cmd {
            TopicsCommand::List { remote } => {
                let list = remote.client()?.list_topics().await?;
                if remote.json {
                    print_json(&list)?;
                } else {
                    let rows: Vec<Vec<String>> = list.topics.iter().map(topic_row).collect();
                    print_table(&HEADER, &rows);
                }
            }
            TopicsCommand::Create {
                name,
                partitions,
                retention_hours,
                retention_bytes,
                remote,
            } => {
                let retention =
                    (retention_hours.is_some() || retention_bytes.is_some()).then(|| {
                        RetentionBody {
                            max_age_ms: retention_hours.map(|h| h.saturating_mul(3_600_000)),
                            max_bytes: retention_bytes,
                        }
                    });
                let req = CreateTopicRequest {
                    name,
                    partitions,
                    retention,
                    require_schemas: false,
                };
                let topic = remote.client()?.create_topic(&req).await?;
                if remote.json {
                    print_json(&topic)?;
                } else {
                    println!(
                        "created topic {} with {}",
                        topic.name,
                        plural(topic.partitions as usize, "partition")
                    );
                }
            }
            TopicsCommand::Delete { name, remote } => {
                remote.client()?.delete_topic(&name).await?;
                if remote.json {
                    print_json(&json!({ "deleted": name }))?;
                } else {
                    println!("deleted topic {name}");
                }
            }
            TopicsCommand::Show { name, remote } => {
                let topic = remote.client()?.topic(&name).await?;
                if remote.json {
                    print_json(&topic)?;
                } else {
                    print_table(&HEADER, &[topic_row(&topic)]);
                    println!();
                    let rows: Vec<Vec<String>> = topic
                        .partition_info
                        .iter()
                        .map(|p| {
                            vec![
                                p.partition.to_string(),
                                p.first_offset.to_string(),
                                p.next_offset.to_string(),
                                p.events.to_string(),
                            ]
                        })
                        .collect();
                    print_table(
                        &["PARTITION", "FIRST_OFFSET", "NEXT_OFFSET", "EVENTS"],
                        &rows,
                    );
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_reads_in_its_largest_whole_unit() {
        assert_eq!(human_duration(72 * 3_600_000), "3d");
        assert_eq!(human_duration(5 * 3_600_000), "5h");
        assert_eq!(human_duration(90 * 60_000), "90m");
        assert_eq!(human_duration(1_500), "1500ms");
    }
}
