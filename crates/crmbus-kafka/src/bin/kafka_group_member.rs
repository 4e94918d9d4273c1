//! A member of a Kafka consumer group in a process of its own, for the test that kills a
//! member mid-batch (`tests/group_members.rs`); built only with the `integration` feature.
//!
//! `kafka_group_member BOOTSTRAP STATE_URL PREFIX TOPIC GROUP ACKS SESSION_MS` joins the
//! group and fetches events. It acknowledges them out of order: every fifth event of a
//! batch (the third, eighth, …) it keeps in hand unacknowledged (`holding <partition>
//! <offset>`), the others it acknowledges (`acked <partition> <offset>`), until it has
//! acknowledged ACKS; then it prints `holding` for the rest of its batch, `partitions <p>
//! <p>…` and `hung`, and waits forever without acknowledging anything more (the test kills
//! it).

use std::io::Write;
use std::time::Duration;

use crmbus_kafka::{GroupConsumerOptions, KafkaGroupConsumer, KafkaLog, KafkaOptions};
use crmbus_postgres::PgStateStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bootstrap, state_url, prefix, topic, group, acks, session_ms] = args.as_slice() else {
        return Err(
            "usage: kafka_group_member BOOTSTRAP STATE_URL PREFIX TOPIC GROUP ACKS SESSION_MS"
                .into(),
        );
    };
    let acks: usize = acks.parse()?;
    let state = PgStateStore::connect(state_url, prefix).await?;
    let log = KafkaLog::connect(bootstrap, state, KafkaOptions::default()).await?;
    let opts = GroupConsumerOptions {
        session_timeout: Duration::from_millis(session_ms.parse()?),
        ..GroupConsumerOptions::default()
    };
    let member = KafkaGroupConsumer::join(&log, topic, group, opts).await?;
    let mut out = std::io::stdout().lock();
    let mut acked = 0;
    loop {
        let batch = member.fetch(100, Duration::from_secs(30)).await?;
        for (i, m) in batch.iter().enumerate() {
            if acked < acks && i % 5 == 2 {
                writeln!(out, "holding {} {}", m.event.partition, m.event.offset)?;
                continue;
            }
            if acked == acks {
                for held in &batch[i..] {
                    writeln!(
                        out,
                        "holding {} {}",
                        held.event.partition, held.event.offset
                    )?;
                }
                let parts: Vec<String> = member.partitions()?.iter().map(u32::to_string).collect();
                writeln!(out, "partitions {}", parts.join(" "))?;
                writeln!(out, "hung")?;
                out.flush()?;
                // Stuck mid-batch: the test kills the process.
                loop {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            }
            m.ack().await?;
            acked += 1;
            writeln!(out, "acked {} {}", m.event.partition, m.event.offset)?;
            out.flush()?;
        }
    }
}
