//! `crmbus subs (create|list|show|delete)`: subscriptions (consumer groups), pulled or
//! pushed to a webhook or a Redis Pub/Sub channel.

use clap::Subcommand;
use crmbus_client::api::{
    CreateSubscriptionRequest, RedisPubsubTarget, RetryBody, SubscriptionTarget, SubscriptionView,
    WebhookTarget,
};
use serde_json::{json, Value};

use crate::client::{block_on, print_cursors, print_json, print_table, Remote};

/// Subscription commands.
#[derive(Subcommand, Debug)]
// Parsed once per run: the size of a variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum SubsCommand {
    /// Create a subscription on a topic: pulled (default), or pushed to a webhook
    /// (--webhook) or a Redis Pub/Sub channel (--redis-pubsub).
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
        /// POST each event to this URL, signed per Standard Webhooks (the secret is
        /// printed once).
        #[arg(long, value_name = "URL", conflicts_with = "redis_pubsub")]
        webhook: Option<String>,
        /// The webhook's signing secret (`whsec_…`); generated when absent. Better given
        /// in the environment than on the command line, where `ps` shows it.
        #[arg(
            long,
            value_name = "SECRET",
            requires = "webhook",
            env = "CRMBUS_WEBHOOK_SECRET",
            hide_env_values = true
        )]
        webhook_secret: Option<String>,
        /// PUBLISH each event on a Redis Pub/Sub channel of the server at this URL.
        #[arg(long, value_name = "URL")]
        redis_pubsub: Option<String>,
        /// The Pub/Sub channel; `{topic}` is the topic's name (default `crm:events:{topic}`).
        #[arg(long, value_name = "CHANNEL", requires = "redis_pubsub")]
        channel: Option<String>,
        /// What the target receives instead of the event: a JSON template such as
        /// '{"deal": "{{ $.data.deal_id }}", "note": "won by {{ $.data.owner }}"}'.
        #[arg(long, value_name = "JSON")]
        transform: Option<String>,
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
                webhook,
                webhook_secret,
                redis_pubsub,
                channel,
                transform,
                remote,
            } => {
                let transform = transform
                    .map(|t| {
                        serde_json::from_str::<serde_json::Value>(&t)
                            .map_err(|e| anyhow::anyhow!("--transform is not JSON: {e}"))
                    })
                    .transpose()?;
                let target = match (webhook, redis_pubsub) {
                    (Some(url), _) => Some(SubscriptionTarget::Webhook(WebhookTarget {
                        url,
                        secret: webhook_secret,
                        previous_secrets: Vec::new(),
                        timeout_ms: None,
                        headers: Default::default(),
                        disabled: None,
                    })),
                    (None, Some(url)) => Some(SubscriptionTarget::RedisPubsub(RedisPubsubTarget {
                        url,
                        channel,
                    })),
                    (None, None) => None,
                };
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
                        schedule_ms: None,
                    }),
                    ordering,
                    on_exhausted,
                    ack_timeout_ms,
                    max_in_flight: None,
                    target,
                    transform,
                };
                let sub = remote.client()?.create_subscription(&topic, &req).await?;
                if remote.json {
                    print_json(&sub)?;
                } else {
                    println!("created subscription {name} on {topic}");
                    if let Some(SubscriptionTarget::Webhook(w)) = &sub.config.target {
                        println!("webhook: {}", w.url);
                        if let Some(secret) = &w.secret {
                            println!(
                                "signing secret (shown once; the receiver verifies with it): {secret}"
                            );
                        }
                    }
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
