//! The SSRF guard of push targets: a webhook may only reach public addresses, unless the
//! operator allows private ones (`[push] allow_private_targets`) or lists them
//! (`[push] allowed_targets`).
//!
//! A URL whose host is an address is checked when the subscription is created (a clear
//! 400) and again before each attempt (the configuration may have changed). A host name
//! is resolved at send time by [`GuardedResolver`], the HTTP client's only resolver: the
//! addresses it refuses are never connected to, and when none is left the attempt fails
//! with [`TargetRefused`]. Redirects are not followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// What a push target may reach.
#[derive(Debug, Clone, Default)]
pub struct TargetGuard {
    /// Every address is allowed.
    allow_private: bool,
    /// Networks allowed although private.
    allowed: Vec<IpNet>,
}

/// An attempt refused by the guard: the host's addresses are all forbidden.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TargetRefused(pub String);

impl TargetGuard {
    /// A guard allowing every address when `allow_private`, else public addresses and
    /// those in `allowed`: a comma-separated list of addresses and networks in CIDR
    /// notation (`127.0.0.1, 10.1.0.0/16, ::1`).
    pub fn new(allow_private: bool, allowed: &str) -> Result<TargetGuard, String> {
        let mut nets = Vec::new();
        for item in allowed.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => match item.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => {
                        return Err(format!(
                            "push.allowed_targets: '{item}' is neither an IP address nor a network in CIDR notation"
                        ))
                    }
                },
            };
            nets.push(net);
        }
        Ok(TargetGuard {
            allow_private,
            allowed: nets,
        })
    }

    /// `Ok` when a push target may connect to `ip`; else why not, in words.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        if self.allow_private || self.allowed.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        match forbidden_kind(ip) {
            None => Ok(()),
            Some(kind) => Err(format!(
                "{ip} is {kind}; push targets may reach only public addresses unless [push] allowed_targets lists it or allow_private_targets = true"
            )),
        }
    }

    /// Checks a target URL when a subscription is created: `http` or `https`, a host,
    /// and, when the host is an address, one the guard allows. A host name is checked
    /// when it is resolved, before each attempt.
    pub fn check_url(&self, url: &url::Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "must be an http:// or https:// URL (not {}://)",
                url.scheme()
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "must not carry credentials; send them in the target's headers instead".into(),
            );
        }
        match url.host() {
            None => Err("must name a host".into()),
            Some(url::Host::Ipv4(ip)) => self.check(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => Ok(()),
        }
    }
}

/// What kind of forbidden address `ip` is, or `None` for a public one.
pub fn forbidden_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        return Some("a cloud metadata address");
    }
    if ip.is_unspecified() || a == 0 {
        Some("an unspecified address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() {
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (carrier-grade NAT) address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if ip.is_broadcast() || a >= 240 {
        Some("a reserved address")
    } else if a == 192 && b == 0 && c == 0 {
        Some("an IETF protocol address")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("a benchmarking address")
    } else {
        None
    }
}

/// The IPv4 address in segments `hi` and `lo` of an IPv6 address.
fn v4_of(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    // IPv4 carried in IPv6 — mapped ::ffff:a.b.c.d, SIIT ::ffff:0:a.b.c.d, the
    // deprecated compatible ::a.b.c.d, NAT64 64:ff9b::a.b.c.d, 6to4 2002:aabb:ccdd:: —
    // is judged by its IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    if seg[..4] == [0, 0, 0, 0] && seg[4] == 0xffff && seg[5] == 0 {
        return forbidden_v4(v4_of(seg[6], seg[7]));
    }
    if seg[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_unspecified() && !ip.is_loopback() {
        return forbidden_v4(v4_of(seg[6], seg[7]));
    }
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        return forbidden_v4(v4_of(seg[6], seg[7]));
    }
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1 {
        return Some("a local-use NAT64 address");
    }
    if seg[0] == 0x2002 {
        return forbidden_v4(v4_of(seg[1], seg[2]));
    }
    if seg[..4] == [0x100, 0, 0, 0] {
        return Some("a discard-only address");
    }
    if ip.is_unspecified() {
        Some("an unspecified address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if seg[0] & 0xfe00 == 0xfc00 {
        Some("a unique-local address")
    } else if seg[0] & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if seg[0] & 0xffc0 == 0xfec0 {
        Some("a site-local address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        Some("a documentation address")
    } else {
        None
    }
}

/// The HTTP client's resolver: the system's lookup, keeping only the addresses the guard
/// allows.
pub struct GuardedResolver {
    guard: Arc<TargetGuard>,
}

impl GuardedResolver {
    /// A resolver checking every address against `guard`.
    pub fn new(guard: Arc<TargetGuard>) -> GuardedResolver {
        GuardedResolver { guard }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = Arc::clone(&self.guard);
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match guard.check(a.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refused.get_or_insert(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| "no address".to_string());
                return Err(Box::new(TargetRefused(format!("{host} resolves to {why}")))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The guard's refusal inside a failed request, if that is why it failed.
pub fn refusal_in(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<TargetRefused>() {
            return Some(r.0.clone());
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn private_and_special_addresses_are_forbidden_public_ones_not() {
        for (addr, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.3.2.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "metadata"),
            ("169.254.3.4", "link-local"),
            ("100.64.0.1", "shared"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00:ec2::254", "unique-local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "metadata"),
            ("::ffff:0:a00:1", "private"),
            ("::7f00:1", "loopback"),
            ("64:ff9b:1::1", "NAT64"),
            ("2002:a00:1::1", "private"),
            ("2002:a9fe:a9fe::", "metadata"),
            ("100::1", "discard"),
        ] {
            let k = forbidden_kind(ip(addr)).unwrap_or_else(|| panic!("{addr} allowed"));
            assert!(k.contains(kind), "{addr}: {k}");
        }
        for addr in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
        ] {
            assert_eq!(forbidden_kind(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn the_allow_list_and_the_switch_let_private_addresses_through() {
        let g = TargetGuard::new(false, "127.0.0.1, 10.1.0.0/16").expect("guard");
        assert!(g.check(ip("127.0.0.1")).is_ok());
        assert!(g.check(ip("10.1.200.3")).is_ok());
        let e = g.check(ip("10.2.0.1")).expect_err("not listed");
        assert!(e.contains("10.2.0.1 is a private address"), "{e}");
        assert!(e.contains("allowed_targets"), "{e}");
        assert!(TargetGuard::new(true, "")
            .expect("guard")
            .check(ip("169.254.169.254"))
            .is_ok());
        let bad = TargetGuard::new(false, "10.0.0.0/8, nowhere").expect_err("bad item");
        assert!(bad.contains("'nowhere'"), "{bad}");
    }

    #[test]
    fn urls_are_checked_at_creation() {
        let g = TargetGuard::new(false, "").expect("guard");
        let url = |s: &str| url::Url::parse(s).expect("url");
        assert!(g.check_url(&url("https://hooks.example.com/crm")).is_ok());
        assert!(g
            .check_url(&url("http://127.0.0.1:8080/x"))
            .expect_err("loopback")
            .contains("loopback"));
        assert!(g
            .check_url(&url("http://[::1]/x"))
            .expect_err("loopback")
            .contains("loopback"));
        // A name is checked when it is resolved, at send time.
        assert!(g.check_url(&url("http://localhost/x")).is_ok());
        assert!(g
            .check_url(&url("ftp://example.com/x"))
            .expect_err("scheme")
            .contains("http"));
        assert!(g
            .check_url(&url("https://user:pw@example.com/x"))
            .expect_err("credentials")
            .contains("credentials"));
    }
}
