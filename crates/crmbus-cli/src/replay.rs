//! `crmbus replay`: move a subscription's cursor (seek) to replay or skip events.

use anyhow::{bail, Context};
use clap::Args;
use crmbus_client::api::SeekRequest;
use serde_json::{json, Map, Value};

use crate::client::{block_on, print_cursors, print_json, Remote};
use crate::subs::position;

/// Options of `crmbus replay`.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Subscription name.
    subscription: String,
    /// earliest, latest, or an RFC 3339 time.
    #[arg(long, conflicts_with = "offset")]
    to: Option<String>,
    /// `PARTITION:OFFSET`; repeatable (partitions not named stay where they are).
    #[arg(long, value_name = "PARTITION:OFFSET")]
    offset: Vec<String>,
    #[command(flatten)]
    remote: Remote,
}

/// Runs `crmbus replay`.
pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let to = match (&args.to, args.offset.is_empty()) {
        (Some(t), true) => position(t),
        (None, false) => {
            let mut offsets = Map::new();
            for o in &args.offset {
                let (p, off) = o
                    .split_once(':')
                    .with_context(|| format!("--offset {o:?} is not PARTITION:OFFSET"))?;
                let off: u64 = off
                    .parse()
                    .with_context(|| format!("--offset {o:?}: {off:?} is not an offset"))?;
                offsets.insert(p.to_string(), json!(off));
            }
            json!({ "offsets": Value::Object(offsets) })
        }
        _ => bail!("give --to earliest|latest|<time>, or --offset PARTITION:OFFSET"),
    };
    block_on(async move {
        let cursor = args
            .remote
            .client()?
            .seek(&args.subscription, &SeekRequest { to })
            .await?;
        if args.remote.json {
            print_json(&cursor)?;
        } else {
            print_cursors(&cursor.partitions);
        }
        Ok(())
    })
}
