//! `crmbus demo`: the seed's lead scenario on an embedded log in a temporary directory.
//!
//! A publisher emits `lead.created` → `lead.qualified` → `lead.converted` for many leads.
//! Three consumer groups read the `leads` topic: `scoring` (always succeeds),
//! `notifications` (fails transiently about 30 % of the time and is retried) and
//! `crm-sync` (fails permanently for some leads; with `on_exhausted = hold` their keys park
//! in the DLQ). Then the CRM sync is "fixed", its DLQ redriven, and it drains to zero.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use crmbus::delivery::{
    handler_fn, Delivery, DlqFilter, HandlerError, OnExhausted, RetryPolicy, SubscribeOptions,
    Subscription,
};
use crmbus::{Event, EventBus, EventLog, TopicSpec};
use crmbus_embedded::{EmbeddedLog, EmbeddedOptions};
use serde::Serialize;
use serde_json::json;

/// Options of `crmbus demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Leads to simulate (three events each).
    #[arg(long, default_value_t = 300)]
    leads: u64,
    /// Every Nth lead is rejected permanently by the CRM sync until it is fixed.
    #[arg(long, default_value_t = 17)]
    bad_every: u64,
    /// Print one JSON object instead of the progress line and summary.
    #[arg(long)]
    json: bool,
}

const STEPS: [&str; 3] = ["lead.created", "lead.qualified", "lead.converted"];

#[derive(Default)]
struct Consumer {
    delivered: AtomicU64,
    /// Per lead, the steps processed successfully, in processing order.
    seen: Mutex<HashMap<String, Vec<usize>>>,
}

impl Consumer {
    fn record(&self, d: &Delivery) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        let step = STEPS
            .iter()
            .position(|s| *s == d.event.ty)
            .unwrap_or(usize::MAX);
        let key = d.event.subject.clone().unwrap_or_default();
        if let Ok(mut seen) = self.seen.lock() {
            seen.entry(key).or_default().push(step);
        }
    }

    /// Leads whose steps were not processed in order (or processed twice).
    fn order_violations(&self) -> u64 {
        let Ok(seen) = self.seen.lock() else {
            return u64::MAX;
        };
        seen.values()
            .filter(|steps| {
                steps.windows(2).any(|w| w[1] != w[0] + 1) || steps.first().is_some_and(|s| *s != 0)
            })
            .count() as u64
    }

    fn done(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

/// What the demo reports.
#[derive(Serialize)]
struct DemoReport {
    leads: u64,
    published: u64,
    delivered: HashMap<&'static str, u64>,
    retries: u64,
    dead_lettered: u64,
    dlq_before_redrive: usize,
    redriven: usize,
    dlq_after_redrive: usize,
    order_violations: u64,
    seconds: f64,
}

fn flaky(d: &Delivery) -> bool {
    // Deterministic "about 30 %": a hash of the offset and the attempt.
    let h = (d.offset ^ (u64::from(d.partition) << 40))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(d.attempt).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    (h >> 33) % 100 < 30
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.leads == 0 || args.bad_every == 0 {
        bail!("--leads and --bad-every must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let opts = EmbeddedOptions {
        retention_interval: None,
        ..EmbeddedOptions::default()
    };
    let log = Arc::new(EmbeddedLog::open(dir.path(), opts)?);
    log.create_topic(TopicSpec::new("leads", 4)).await?;
    let bus = EventBus::builder()
        .log(Arc::clone(&log) as Arc<dyn EventLog>)
        .state(log.state_store())
        .default_source("urn:crmbus:demo")
        .build();

    let retry = RetryPolicy {
        max_attempts: 8,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(100),
        multiplier: 2.0,
        max_age: None,
        schedule: Vec::new(),
    };
    let base = SubscribeOptions {
        retry,
        breaker: None,
        ..SubscribeOptions::default()
    };

    let scoring = Arc::new(Consumer::default());
    let notifications = Arc::new(Consumer::default());
    let crm = Arc::new(Consumer::default());
    let crm_fixed = Arc::new(AtomicBool::new(false));
    let bad_every = args.bad_every;

    let c = Arc::clone(&scoring);
    let scoring_sub = bus
        .subscribe(
            "leads",
            "scoring",
            handler_fn(move |d: Delivery| {
                let c = Arc::clone(&c);
                async move {
                    c.record(&d);
                    Ok(())
                }
            }),
            base.clone(),
        )
        .await?;
    let c = Arc::clone(&notifications);
    let notify_sub = bus
        .subscribe(
            "leads",
            "notifications",
            handler_fn(move |d: Delivery| {
                let c = Arc::clone(&c);
                async move {
                    if flaky(&d) {
                        return Err(HandlerError::transient("SMTP server timed out"));
                    }
                    c.record(&d);
                    Ok(())
                }
            }),
            base.clone(),
        )
        .await?;
    let (c, fixed) = (Arc::clone(&crm), Arc::clone(&crm_fixed));
    let crm_opts = SubscribeOptions {
        on_exhausted: OnExhausted::Hold,
        ..base.clone()
    };
    let crm_sub = bus
        .subscribe(
            "leads",
            "crm-sync",
            handler_fn(move |d: Delivery| {
                let (c, fixed) = (Arc::clone(&c), Arc::clone(&fixed));
                async move {
                    let n: u64 = d
                        .event
                        .data_json()
                        .and_then(|v| v["n"].as_u64())
                        .unwrap_or(0);
                    if n.is_multiple_of(bad_every) && !fixed.load(Ordering::Relaxed) {
                        return Err(HandlerError::permanent(
                            "CRM rejected the lead: account is missing",
                        ));
                    }
                    c.record(&d);
                    Ok(())
                }
            }),
            crm_opts,
        )
        .await?;

    // Publish: every lead moves through its three steps, leads interleaved.
    let mut published = 0u64;
    for (step_no, step) in STEPS.iter().enumerate() {
        let batch: Vec<Event> = (0..args.leads)
            .map(|n| {
                Event::new(*step, json!({"lead_id": format!("lead-{n}"), "n": n, "step": step_no, "score": (n * 37) % 100}))
                    .subject(format!("lead-{n}"))
                    .extension("companyid", "acme")
            })
            .collect();
        published += bus.publish_batch(batch, &["leads"]).await?.len() as u64;
    }

    let bad_leads = (0..args.leads)
        .filter(|n| n.is_multiple_of(bad_every))
        .count() as u64;
    let crm_expected = published - bad_leads * 3;
    let wait_until = |what: &'static str, f: Box<dyn Fn() -> bool + Send>| {
        let quiet = args.json;
        let (s, n, c) = (
            Arc::clone(&scoring),
            Arc::clone(&notifications),
            Arc::clone(&crm),
        );
        async move {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !f() {
                if Instant::now() > deadline {
                    bail!("the demo did not finish ({what}) within 300 s");
                }
                if !quiet {
                    eprint!("\r{what}: scoring {}/{published}  notifications {}/{published}  crm-sync {}/{published}   ",
                        s.done(), n.done(), c.done());
                    let _ = std::io::stderr().flush();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if !quiet {
                eprintln!("\r{what}: scoring {}/{published}  notifications {}/{published}  crm-sync {}/{published}   ",
                    s.done(), n.done(), c.done());
            }
            Ok(())
        }
    };
    let (s, n, c) = (
        Arc::clone(&scoring),
        Arc::clone(&notifications),
        Arc::clone(&crm),
    );
    wait_until(
        "delivering",
        Box::new(move || {
            s.done() == published && n.done() == published && c.done() == crm_expected
        }),
    )
    .await?;
    // The held keys are parked: wait until each has its dead letter.
    let mut dlq_before = 0;
    for _ in 0..6000 {
        dlq_before = crm_sub.dead_letters(DlqFilter::default()).await?.len();
        if dlq_before as u64 == bad_leads {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Fix the CRM sync and redrive its DLQ.
    crm_fixed.store(true, Ordering::Relaxed);
    let redriven = crm_sub
        .redrive(None, DlqFilter::default(), "demo-operator")
        .await?;
    let c = Arc::clone(&crm);
    wait_until("redriving", Box::new(move || c.done() == published)).await?;
    let dlq_after = crm_sub.dead_letters(DlqFilter::default()).await?.len();

    let mut retries = 0;
    let mut dead_lettered = 0;
    for sub in [&scoring_sub, &notify_sub, &crm_sub] {
        let s = sub.stats().await?;
        retries += s.retried;
        dead_lettered += s.dead_lettered;
    }
    let order_violations =
        scoring.order_violations() + notifications.order_violations() + crm.order_violations();
    for sub in [scoring_sub, notify_sub, crm_sub] {
        close(sub).await?;
    }
    log.close().await?;

    let report = DemoReport {
        leads: args.leads,
        published,
        delivered: HashMap::from([
            ("scoring", scoring.done()),
            ("notifications", notifications.done()),
            ("crm_sync", crm.done()),
        ]),
        retries,
        dead_lettered,
        dlq_before_redrive: dlq_before,
        redriven,
        dlq_after_redrive: dlq_after,
        order_violations,
        seconds: started.elapsed().as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "crmbus demo — {} leads, {} events published to 'leads' (4 partitions)",
            report.leads, report.published
        );
        println!(
            "  delivered: scoring {}, notifications {}, crm-sync {}",
            scoring.done(),
            notifications.done(),
            crm.done()
        );
        println!("  retries {} (notifications failing ~30 % transiently), dead-lettered {} (crm-sync, held)", report.retries, report.dead_lettered);
        println!(
            "  DLQ: {} before redrive, {} redriven, {} after",
            report.dlq_before_redrive, report.redriven, report.dlq_after_redrive
        );
        println!(
            "  order violations: {}   ({:.1} s)",
            report.order_violations, report.seconds
        );
    }
    if report.order_violations > 0 || report.dlq_after_redrive > 0 {
        bail!("the demo ended with order violations or dead letters left");
    }
    Ok(())
}

async fn close(sub: Subscription) -> anyhow::Result<()> {
    sub.unsubscribe().await.context("stopping a subscription")
}
