//! Reads by time: `offset_for_time`.

use std::time::Duration;

use crmbus::{Event, TopicSpec};

use super::harness::{ev, topics, Check, Target};

/// Waits until the wall clock reaches `t` (at most ten seconds: the stamps this waits past
/// are the backend's own, moments old, unless its clock is off).
async fn wait_for_clock(t: chrono::DateTime<chrono::Utc>) -> Result<(), String> {
    let limit = std::time::Instant::now() + Duration::from_secs(10);
    while chrono::Utc::now() < t {
        if std::time::Instant::now() > limit {
            return Err(format!(
                "the clock did not reach {t} in 10 s (now {}): a backend stamps events in the future",
                chrono::Utc::now()
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

pub(super) async fn read_from_time(f: &Target<'_>, name: &str) -> Result<(), String> {
    let log = f.open(name).await.check("open")?;
    log.create_topic(TopicSpec::new("deals", 1))
        .await
        .check("create")?;
    let before_all = chrono::Utc::now() - chrono::Duration::seconds(5);
    let first: Vec<Event> = (0..5).map(|i| ev("deal.created", "deal-1", i)).collect();
    log.append(&topics(&["deals"]), &first)
        .await
        .check("append 1")?;
    // Backends stamp with millisecond or finer clocks: the cut is a millisecond boundary
    // after the first batch's newest stamp, and the second batch is appended only once
    // the clock has passed the millisecond after the cut.
    let stamped = log.read("deals", 0, 0, 100).await.check("read 1")?;
    let newest = stamped
        .iter()
        .map(|s| s.timestamp)
        .max()
        .ok_or("the first batch reads back empty")?;
    let cut_ms = newest.timestamp_millis() + 2;
    let cut = chrono::DateTime::from_timestamp_millis(cut_ms).ok_or("cut out of range")?;
    wait_for_clock(cut + chrono::Duration::milliseconds(1)).await?;
    let second: Vec<Event> = (5..9).map(|i| ev("deal.updated", "deal-1", i)).collect();
    log.append(&topics(&["deals"]), &second)
        .await
        .check("append 2")?;
    let at = log
        .offset_for_time("deals", 0, cut)
        .await
        .check("offset_for_time")?;
    ensure!(at == 5, "offset_for_time(cut) = {at}, want 5");
    let got = log.read("deals", 0, at, 100).await.check("read")?;
    ensure!(
        got.len() == 4 && got[0].event == second[0],
        "read from time gave {} events",
        got.len()
    );
    ensure!(
        got.iter().all(|s| s.timestamp >= cut),
        "an event before the cut was returned"
    );
    let zero = log
        .offset_for_time("deals", 0, before_all)
        .await
        .check("offset_for_time early")?;
    ensure!(zero == 0, "offset_for_time(before all) = {zero}");
    let future = chrono::Utc::now() + chrono::Duration::hours(1);
    let end = log
        .offset_for_time("deals", 0, future)
        .await
        .check("offset_for_time future")?;
    ensure!(
        end == 9,
        "offset_for_time(future) = {end}, want next offset 9"
    );
    log.close().await.check("close")
}
