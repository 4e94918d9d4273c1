//! Support for the outbox tests: a fresh PostgreSQL database per test ([`TestDb`]) and the
//! checks every relay test ends with ([`check_published`]).

use std::collections::{BTreeMap, HashSet};

use tokio_postgres::NoTls;

/// The machine's PostgreSQL: `CRMBUS_POSTGRES_URL`, default
/// `postgres://postgres@127.0.0.1:5432/test` (what `scripts/services.sh` makes sure of).
pub fn machine_url() -> String {
    std::env::var("CRMBUS_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// `url` with its database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    match url.rfind('/') {
        Some(i) if i > url.find("://").map_or(0, |s| s + 2) => format!("{}/{db}", &url[..i]),
        _ => format!("{url}/{db}"),
    }
}

/// A connection whose driver runs on the current runtime; panics naming `url` if it fails.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("connect to {url}: {e} (scripts/services.sh starts PostgreSQL)")
        });
    tokio::spawn(conn);
    client
}

/// A database created for one test (named `crmbus_t_<uuid>`) and dropped by
/// [`TestDb::drop_db`].
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
    admin_url: String,
}

impl TestDb {
    /// A new database on the machine's PostgreSQL.
    pub async fn create() -> TestDb {
        TestDb::create_on(&machine_url()).await
    }

    /// A new database on the server `admin_url` reaches.
    pub async fn create_on(admin_url: &str) -> TestDb {
        let name = format!("crmbus_t_{}", uuid::Uuid::now_v7().simple());
        connect(admin_url)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        TestDb {
            url: with_database(admin_url, &name),
            name,
            admin_url: admin_url.to_string(),
        }
    }

    /// A connection to it.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    /// Drops it (its connections are cut).
    pub async fn drop_db(self) {
        connect(&self.admin_url)
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .expect("drop database");
    }
}

/// One stored event as the checks see it: its id and subject, in the order a partition
/// holds them (read the topic partition by partition, each in offset order).
pub type Published = (String, Option<String>);

/// Every committed row's event is among `published` exactly once, no rolled-back one is,
/// and per subject the events come in row-id order (events without a subject have no order
/// to keep). `committed` maps event ids to row ids.
pub fn check_published(
    published: &[Published],
    committed: &BTreeMap<String, i64>,
    rolled_back: &HashSet<String>,
) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut last_row: BTreeMap<&str, i64> = BTreeMap::new();
    for (id, subject) in published {
        assert!(
            !rolled_back.contains(id),
            "{id} was rolled back but published"
        );
        let row = *committed
            .get(id)
            .unwrap_or_else(|| panic!("{id} published but never committed"));
        if let Some(subject) = subject.as_deref() {
            if let Some(prev) = last_row.insert(subject, row) {
                assert!(prev < row, "{subject}: row {row} stored after row {prev}");
            }
        }
        *seen.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let missing: Vec<_> = committed
        .keys()
        .filter(|id| !seen.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "committed but never published: {missing:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, subject: &str) -> Published {
        (id.to_string(), Some(subject.to_string()))
    }

    #[test]
    fn the_checks_catch_each_way_of_getting_it_wrong() {
        let committed: BTreeMap<String, i64> = [("a".to_string(), 1), ("b".to_string(), 2)]
            .into_iter()
            .collect();
        let rolled: HashSet<String> = ["x".to_string()].into_iter().collect();
        check_published(&[p("a", "s"), p("b", "s")], &committed, &rolled);
        let fails = |published: Vec<Published>| {
            std::panic::catch_unwind(|| check_published(&published, &committed, &rolled)).is_err()
        };
        assert!(fails(vec![p("b", "s"), p("a", "s")]), "order");
        assert!(fails(vec![p("a", "s"), p("a", "s"), p("b", "s")]), "twice");
        assert!(fails(vec![p("a", "s")]), "missing");
        assert!(
            fails(vec![p("a", "s"), p("b", "s"), p("x", "s")]),
            "rolled back"
        );
        assert!(
            !fails(vec![p("b", "t"), p("a", "s")]),
            "other subjects may interleave"
        );
    }

    #[test]
    fn a_database_name_replaces_the_one_in_the_url() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
    }
}
