//! `[[outbox]]` in the server's configuration: the server relays a PostgreSQL outbox into
//! its own bus (no separate relay process), reports it in /metrics, and a bad section is a
//! configuration error naming the key.

mod common;

use std::time::Duration;

use common::TestServer;
use crmbus_server::config::OutboxSection;
use crmbus_server::{Config, Server};
use serde_json::json;
use tokio_postgres::NoTls;

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_relays_an_outbox_named_in_its_configuration() {
    let admin_url = std::env::var("CRMBUS_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("crmbus_t_{}", uuid::Uuid::now_v7().simple());
    let admin = connect(&admin_url).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let db_url = format!(
        "{}/{name}",
        &admin_url[..admin_url.rfind('/').expect("a database in the URL")]
    );
    let mut db = connect(&db_url).await;
    crmbus_postgres::sql::install(&mut db)
        .await
        .expect("install");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = common::config(dir.path(), "embedded", &[]);
    config.outbox.push(OutboxSection {
        name: "crm".into(),
        database_url: db_url.clone(),
        poll_interval_ms: 50,
        ..OutboxSection::default()
    });
    let server = Server::start(config).await.expect("start");
    let s = TestServer::attach(server, dir);
    s.create_topic("deals", 2).await;

    let tx = db.transaction().await.expect("begin");
    tx.execute(
        "INSERT INTO crmbus_outbox (topics, event) VALUES ($1, $2)",
        &[
            &vec!["deals".to_string()],
            &json!({"id": "won-1", "source": "/crm", "type": "deal.won", "subject": "deal-1",
                    "data": {"deal_id": 1, "amount": "10.00"}}),
        ],
    )
    .await
    .expect("insert");
    tx.commit().await.expect("commit");
    let rolled = db.transaction().await.expect("begin");
    rolled
        .execute(
            "INSERT INTO crmbus_outbox (topics, event) VALUES ($1, $2)",
            &[
                &vec!["deals".to_string()],
                &json!({"id": "never", "source": "/crm", "type": "deal.won", "subject": "deal-1",
                        "data": {"deal_id": 1, "amount": "10.00"}}),
            ],
        )
        .await
        .expect("insert");
    rolled.rollback().await.expect("rollback");

    while s.event_count("deals").await < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, body) = s.get("/v1/topics/deals/events").await;
    let ids: Vec<&str> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event"]["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["won-1"]);

    let metrics = s.metrics().await;
    assert!(
        metrics.contains("crmbus_outbox_published_total{outbox=\"crm\"} 1"),
        "{metrics}"
    );
    s.stop().await;
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .expect("drop");
}

#[test]
fn an_outbox_section_without_a_database_is_refused_naming_the_key() {
    let text = "[[outbox]]\nname = \"crm\"\n";
    let err = Config::from_toml(text, Vec::new()).expect_err("no database_url");
    assert!(err.to_string().contains("outbox[0].database_url"), "{err}");
    let text = "[[outbox]]\ndatabase_url = \"postgres://a@b/c\"\n[[outbox]]\ndatabase_url = \"postgres://a@b/d\"\n";
    let err = Config::from_toml(text, Vec::new()).expect_err("two named default");
    assert!(err.to_string().contains("used twice"), "{err}");
    let text = "[[outbox]]\ndatabase_url = \"postgres://a@b/c\"\nbatchsize = 3\n";
    let err = Config::from_toml(text, Vec::new()).expect_err("unknown key");
    assert!(err.to_string().contains("batchsize"), "{err}");
    // The CLI's variable for `crmbus outbox` is not a server key.
    let ok = Config::from_toml(
        "",
        vec![(
            "CRMBUS_OUTBOX_DATABASE_URL".to_string(),
            "postgres://a@b/c".to_string(),
        )],
    );
    assert!(ok.is_ok(), "{ok:?}");
}
