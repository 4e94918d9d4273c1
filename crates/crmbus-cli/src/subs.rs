//! `crmbus subs (create|list|show|delete)`: pull subscriptions (consumer groups).

use clap::Subcommand;
use crmbus_client::api::{CreateSubscriptionRequest, RetryBody, SubscriptionView};
use serde_json::{json, Value};

use crate::client::{block_on, print_cursors, print_json, print_table, Remote};

/// Subscription commands.
#[derive(Subcommand, Debug)]
pub enum SubsCommand {
    /// Create a pull subscription on a topic.
    Create {
        /// Topic.
        topic: String,
        /// Subscription (and consumer group) name.
        name: String,
        /// Only events whose type matches this pattern (`deal.*`); repeatable.
        #[arg(long = "type", value_name = "PATTERN")]
        types: Vec<String>,
        /// Where a new subscription starts: earliest (default), latest, or an RFC 3339 time.
        #[arg(long, default_value = "earliest")]
        start: String,
        /// Deliveries at most per event, the first included (default 5).
        #[arg(long)]
        max_attempts: Option<u32>,
        /// key (default: per-subject order) or none.
        #[arg(long)]
        ordering: Option<String>,
        /// skip (default) or hold: what a key does after its event is dead-lettered.
        #[arg(long)]
        on_exhausted: Option<String>,
        /// Lease of a pulled delivery, ms (default 30000).
        #[arg(long)]
        ack_timeout_ms: Option<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Pull deliveries once, and ack (--ack) or nack (--nack ERROR) them.
    Pull(crate::consume::PullArgs),
    /// List subscriptions with their lag and DLQ size.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a subscription: configuration, lag per partition, in flight, parked keys, DLQ.
    Show {
        /// Subscription name.
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a subscription with its retry state and dead letters.
    Delete {
        /// Subscription name.
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// `earliest`, `latest`, or a time as the API's `{time}`.
pub fn position(text: &str) -> Value {
    match text {
        "earliest" | "latest" => json!(text),
        t => json!({ "time": t }),
    }
}

fn row(s: &SubscriptionView) -> Vec<String> {
    let st = &s.status;
    vec![
        s.name.clone(),
        s.topic.clone(),
        st.lag.to_string(),
        st.in_flight.saturating_sub(st.leased).to_string(),
        st.leased.to_string(),
        st.parked_keys.to_string(),
        st.dlq_size.to_string(),
    ]
}

const HEADER: [&str; 7] = [
    "NAME",
    "TOPIC",
    "LAG",
    "QUEUED",
    "LEASED",
    "PARKED_KEYS",
    "DLQ",
];

/// Runs a subscription command.
pub fn run(cmd: SubsCommand) -> anyhow::Result<()> {
    if let SubsCommand::Pull(args) = cmd {
        return crate::consume::pull(args);
    }
    block_on(async move {
        match cmd {
            SubsCommand::Create {
                topic,
                name,
                types,
                start,
                max_attempts,
                ordering,
                on_exhausted,
                ack_timeout_ms,
                remote,
            } => {
                let req = CreateSubscriptionRequest {
                    name: name.clone(),
                    filter: (!types.is_empty()).then(|| json!({ "types": types })),
                    start: Some(position(&start)),
                    retry: max_attempts.map(|n| RetryBody {
                        max_attempts: Some(n),
                        initial_backoff_ms: None,
                        max_backoff_ms: None,
                        multiplier: None,
                        max_age_ms: None,
                    }),
                    ordering,
                    on_exhausted,
                    ack_timeout_ms,
                    max_in_flight: None,
                };
                let sub = remote.client()?.create_subscription(&topic, &req).await?;
                if remote.json {
                    print_json(&sub)?;
                } else {
                    println!("created subscription {name} on {topic}");
                }
            }
            // Handled before the runtime starts (it has its own).
            SubsCommand::Pull(_) => {}
            SubsCommand::List { remote } => {
                let list = remote.client()?.list_subscriptions().await?;
                if remote.json {
                    print_json(&list)?;
                } else {
                    let rows: Vec<Vec<String>> = list.subscriptions.iter().map(row).collect();
                    print_table(&HEADER, &rows);
                }
            }
            SubsCommand::Show { name, remote } => {
                let sub = remote.client()?.subscription(&name).await?;
                if remote.json {
                    print_json(&sub)?;
                } else {
                    print_table(&HEADER, &[row(&sub)]);
                    println!();
                    print_cursors(&sub.status.partitions);
                    println!("\nconfig: {}", serde_json::to_string(&sub.config)?);
                }
            }
            SubsCommand::Delete { name, remote } => {
                remote.client()?.delete_subscription(&name).await?;
                if remote.json {
                    print_json(&json!({ "deleted": name }))?;
                } else {
                    println!("deleted subscription {name}");
                }
            }
        }
        Ok(())
    })
}
