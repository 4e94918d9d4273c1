//! A real server on an ephemeral port for the HTTP tests, and small client helpers.

#![allow(dead_code)]

use std::path::Path;

use crmbus_server::{Config, Server};
use serde_json::{json, Value};

pub struct TestServer {
    pub server: Option<Server>,
    pub base: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

pub fn config(dir: &Path, backend: &str, extra: &[(&str, &str)]) -> Config {
    // The generic HTTP tests publish free-form events; the schema tests turn the catalog on.
    let mut env = vec![
        ("CRMBUS_SCHEMAS_CATALOG".to_string(), "false".to_string()),
        (
            "CRMBUS_SERVER_LISTEN".to_string(),
            "127.0.0.1:0".to_string(),
        ),
        ("CRMBUS_STORAGE_BACKEND".to_string(), backend.to_string()),
        (
            "CRMBUS_STORAGE_DATA_DIR".to_string(),
            dir.join("data").display().to_string(),
        ),
    ];
    for (k, v) in extra {
        env.push((k.to_string(), v.to_string()));
    }
    Config::load(None, env).expect("config")
}

impl TestServer {
    pub async fn start(backend: &str, extra: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, backend, extra).await
    }

    pub async fn start_in(
        dir: tempfile::TempDir,
        backend: &str,
        extra: &[(&str, &str)],
    ) -> TestServer {
        let server = Server::start(config(dir.path(), backend, extra))
            .await
            .expect("server starts");
        TestServer::attach(server, dir)
    }

    /// A server started from a configuration the test built itself.
    pub fn attach(server: Server, dir: tempfile::TempDir) -> TestServer {
        let base = format!("http://{}", server.local_addr());
        TestServer {
            server: Some(server),
            base,
            client: reqwest::Client::new(),
            dir,
        }
    }

    /// Stops gracefully and returns the data directory for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("graceful shutdown");
        }
        self.dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.expect("GET");
        status_json(r).await
    }

    /// A GET with an API key.
    pub async fn get_with(&self, path: &str, key: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("GET");
        status_json(r).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("POST");
        status_json(r).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE");
        status_json(r).await
    }

    pub async fn create_topic(&self, name: &str, partitions: u32) {
        let (s, body) = self
            .post(
                "/v1/topics",
                json!({"name": name, "partitions": partitions}),
            )
            .await;
        assert_eq!(s, 201, "{body}");
    }

    /// Publishes a structured event; returns (status, body).
    pub async fn publish(&self, topic: &str, event: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(&format!("/v1/topics/{topic}/events")))
            .header("content-type", "application/cloudevents+json")
            .body(event.to_string())
            .send()
            .await
            .expect("publish");
        status_json(r).await
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn event_count(&self, topic: &str) -> u64 {
        let (s, body) = self.get(&format!("/v1/topics/{topic}")).await;
        assert_eq!(s, 200, "{body}");
        body["events"].as_u64().expect("events")
    }
}

pub async fn status_json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

pub fn event(id: &str, ty: &str, subject: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "urn:test:crm",
        "type": ty,
        "subject": subject,
        "data": data,
    })
}

pub fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["field"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
