//! The [`LeaseStore`] contract and fenced writes, written once and run by every shared
//! backend (`tests/leases.rs` of Redis, and of NATS when it has leases) with
//! [`check_leases`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use crmbus::cluster::{Fence, LeaseStore};
use crmbus::{EventLog, LogError, StateOp, StateStore, TopicSpec};

/// Checks `leases` against its contract, and that `state` and `log` (of the same backend)
/// refuse writes fenced by a lease that was lost: acquire only when free, tokens that only
/// grow, renew and release only with the holder's token, expiry after the time to live
/// (measured by the backend, waited for here with a deadline), listing by prefix, revoke.
/// `topic` must not exist in `log`; it is created with one partition. Returns the first
/// rule broken.
pub async fn check_leases(
    leases: Arc<dyn LeaseStore>,
    state: Arc<dyn StateStore>,
    log: Arc<dyn EventLog>,
    topic: &str,
) -> Result<(), String> {
    let err = |what: &str, e: LogError| format!("{what}: {e}");
    let long = Duration::from_secs(30);
    let a = leases
        .acquire("part/erp/0", "server-a", "{\"url\":\"a\"}", long)
        .await
        .map_err(|e| err("acquire", e))?
        .ok_or("a free lease was not acquired")?;
    if leases
        .acquire("part/erp/0", "server-b", "", long)
        .await
        .map_err(|e| err("second acquire", e))?
        .is_some()
    {
        return Err("a held lease was acquired by a second holder".into());
    }
    let other = leases
        .acquire("part/erp/1", "server-b", "", long)
        .await
        .map_err(|e| err("acquire another", e))?
        .ok_or("a second free lease was not acquired")?;
    if other <= a {
        return Err(format!("tokens must grow: {a} then {other}"));
    }
    if !leases
        .renew("part/erp/0", a, long)
        .await
        .map_err(|e| err("renew", e))?
    {
        return Err("the holder could not renew its lease".into());
    }
    if leases
        .renew("part/erp/0", a + 1000, long)
        .await
        .map_err(|e| err("renew with a wrong token", e))?
    {
        return Err("a wrong token renewed a lease".into());
    }
    leases
        .release("part/erp/0", a + 1000)
        .await
        .map_err(|e| err("release with a wrong token", e))?;
    let listed = leases.list("part/erp/").await.map_err(|e| err("list", e))?;
    let names: Vec<&str> = listed.iter().map(|l| l.name.as_str()).collect();
    if names != ["part/erp/0", "part/erp/1"] {
        return Err(format!(
            "list after a release with a wrong token: {names:?}"
        ));
    }
    let first = &listed[0];
    if first.holder != "server-a"
        || first.token != a
        || first.data != "{\"url\":\"a\"}"
        || first.expires_in_ms == 0
        || first.expires_in_ms > 30_000
    {
        return Err(format!("the listed lease is not as acquired: {first:?}"));
    }
    if !leases
        .list("member/")
        .await
        .map_err(|e| err("list other prefix", e))?
        .is_empty()
    {
        return Err("a list by prefix returned leases of another prefix".into());
    }

    // A listing while a lease is renewed again and again names each lease once.
    let renewer = {
        let leases = Arc::clone(&leases);
        tokio::spawn(async move {
            for _ in 0..200 {
                if !matches!(leases.renew("part/erp/1", other, long).await, Ok(true)) {
                    return false;
                }
            }
            true
        })
    };
    for _ in 0..20 {
        let listed = leases.list("part/").await.map_err(|e| err("list", e))?;
        let mut names: Vec<&str> = listed.iter().map(|l| l.name.as_str()).collect();
        let all = names.len();
        names.dedup();
        if names.len() != all {
            return Err(format!("a listing named a lease twice: {listed:?}"));
        }
    }
    if !renewer.await.unwrap_or(false) {
        return Err("renewing a held lease failed".into());
    }

    // Fenced writes: accepted while the lease is held with the token.
    log.create_topic(TopicSpec::new(topic, 1))
        .await
        .map_err(|e| err("create topic", e))?;
    let fence = vec![Fence {
        lease: "part/erp/0".into(),
        token: a,
    }];
    let put = |v: &str| StateOp::Put {
        namespace: "sub/t/erp/retry".into(),
        key: "0/1".into(),
        value: v.as_bytes().to_vec(),
    };
    state
        .apply_fenced(&fence, vec![put("held")])
        .await
        .map_err(|e| err("a fenced write while held", e))?;
    log.commit_offset_fenced(&fence, "erp", topic, 0, 0)
        .await
        .map_err(|e| err("a fenced commit while held", e))?;

    // Released with the token, taken by another holder: the old token is refused.
    leases
        .release("part/erp/0", a)
        .await
        .map_err(|e| err("release", e))?;
    let b = leases
        .acquire("part/erp/0", "server-b", "", long)
        .await
        .map_err(|e| err("acquire after release", e))?
        .ok_or("a released lease was not free")?;
    if b <= other {
        return Err(format!("tokens must grow: {other} then {b}"));
    }
    match state.apply_fenced(&fence, vec![put("stale")]).await {
        Err(LogError::Fenced(_)) => {}
        other => return Err(format!("a write with a lost lease's token: {other:?}")),
    }
    let kept = state
        .get("sub/t/erp/retry", "0/1")
        .await
        .map_err(|e| err("get", e))?;
    if kept.as_deref() != Some(b"held".as_slice()) {
        return Err(format!("a refused write changed the state: {kept:?}"));
    }
    match log.commit_offset_fenced(&fence, "erp", topic, 0, 0).await {
        Err(LogError::Fenced(_)) => {}
        other => return Err(format!("a commit with a lost lease's token: {other:?}")),
    }
    // A batch is refused whole when one of its fences is lost.
    let both = vec![
        Fence {
            lease: "part/erp/1".into(),
            token: other,
        },
        fence[0].clone(),
    ];
    if !matches!(
        state.apply_fenced(&both, vec![put("half")]).await,
        Err(LogError::Fenced(_))
    ) {
        return Err("a batch with one lost fence among two was applied".into());
    }

    // Revoke removes a lease whoever holds it.
    leases
        .revoke("part/erp/0")
        .await
        .map_err(|e| err("revoke", e))?;
    let new_fence = [Fence {
        lease: "part/erp/0".into(),
        token: b,
    }];
    if !matches!(
        state.apply_fenced(&new_fence, vec![put("revoked")]).await,
        Err(LogError::Fenced(_))
    ) {
        return Err("a write fenced by a revoked lease was applied".into());
    }

    // Expiry, by the backend's clock: a short lease becomes free again.
    let short = Duration::from_millis(300);
    let s = leases
        .acquire("part/mail/0", "server-a", "", short)
        .await
        .map_err(|e| err("acquire a short lease", e))?
        .ok_or("a free lease was not acquired")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let taken = loop {
        if let Some(t) = leases
            .acquire("part/mail/0", "server-b", "", long)
            .await
            .map_err(|e| err("acquire after expiry", e))?
        {
            break t;
        }
        if Instant::now() > deadline {
            return Err("a lease never expired".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if taken <= s {
        return Err(format!("tokens must grow: {s} then {taken}"));
    }
    if leases
        .renew("part/mail/0", s, long)
        .await
        .map_err(|e| err("renew an expired lease", e))?
    {
        return Err("the holder of an expired lease renewed it after another took it".into());
    }
    Ok(())
}
