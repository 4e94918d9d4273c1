//! [`Client`]: one method per route.

use bytes::Bytes;
use crmbus_api::{
    AckRequest, AckResponse, AuditList, AuditLogPage, AuditLogQuery, CheckView,
    CompatibilityRequest, CompatibilityView, CreateKeyRequest, CreateSubscriptionRequest,
    CreateTopicRequest, CreatedKey, DlqEntryView, DlqList, DlqQuery, Health, KeyList, LiveQuery,
    NackRequest, Problem, PublishResponse, PullRequest, PullResponse, ReadQuery, ReadResponse,
    RedriveRequest, RedriveResponse, RegistrationView, RotateSecretRequest, SchemaList,
    SchemaRequest, SchemaVersionView, SeekRequest, SeekResponse, SubjectEventsResponse,
    SubjectReadQuery, SubscriptionList, SubscriptionView, TopicList, TopicView, ValidationView,
};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ClientError;
use crate::live::LiveStream;
use crate::raw::RawPullResponse;
use crate::routes;

/// The header a dead-letter action is audited under.
const ACTOR_HEADER: &str = "x-crmbus-actor";

/// A publish body already encoded: its content type (`application/cloudevents+json`,
/// `application/cloudevents-batch+json`, or a binary-mode media type with `ce-*` headers
/// set by the caller) and its bytes. For callers that send the same bytes many times.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The `content-type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
}

impl Encoded {
    /// One structured-mode CloudEvent.
    pub fn structured<E: Serialize + ?Sized>(event: &E) -> Result<Encoded, serde_json::Error> {
        Ok(Encoded {
            content_type: "application/cloudevents+json",
            body: serde_json::to_vec(event)?.into(),
        })
    }

    /// A batch-mode list of CloudEvents.
    pub fn batch<E: Serialize>(events: &[E]) -> Result<Encoded, serde_json::Error> {
        Ok(Encoded {
            content_type: "application/cloudevents-batch+json",
            body: serde_json::to_vec(events)?.into(),
        })
    }
}

/// A client of one crmbus server. Cheap to clone: clones share the connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer …` with every request, when set.
    api_key: Option<String>,
}

impl Client {
    /// A client of the server at `base_url` (`http://host:port`).
    pub fn new(base_url: &str) -> Result<Client, ClientError> {
        Client::with_http(base_url, reqwest::Client::new())
    }

    /// A client that sends through `http` (for a connection pool or timeouts of one's
    /// own).
    pub fn with_http(base_url: &str, http: reqwest::Client) -> Result<Client, ClientError> {
        let base = base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::InvalidUrl(base_url.to_string()));
        }
        Ok(Client {
            base,
            http,
            api_key: None,
        })
    }

    /// A client of an `https://` server whose certificate is signed by one of the PEM
    /// certificates in `ca_pem` (a self-signed certificate, a private CA), trusted beside
    /// the system's roots.
    pub fn with_ca_certs(base_url: &str, ca_pem: &[u8]) -> Result<Client, ClientError> {
        let certs = reqwest::Certificate::from_pem_bundle(ca_pem)
            .map_err(|e| ClientError::InvalidCertificate(format!("not a PEM bundle: {e}")))?;
        if certs.is_empty() {
            return Err(ClientError::InvalidCertificate(
                "no PEM certificate in the bundle".to_string(),
            ));
        }
        let http = reqwest::Client::builder()
            .tls_certs_merge(certs)
            .build()
            .map_err(|e| ClientError::InvalidCertificate(e.to_string()))?;
        Client::with_http(base_url, http)
    }

    /// The same client, sending `key` (`crmbus_…`) as `Authorization: Bearer …` with every
    /// request.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Client {
        self.api_key = Some(key.into());
        self
    }

    /// The server's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.api_key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    async fn send(&self, req: RequestBuilder) -> Result<Response, ClientError> {
        let resp = req.send().await.map_err(|source| {
            if source.is_connect() || source.is_timeout() {
                ClientError::Unreachable {
                    url: self.base.clone(),
                    source,
                }
            } else {
                ClientError::Request {
                    url: self.base.clone(),
                    source,
                }
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.refusal(resp).await)
    }

    /// The error an unsuccessful answer stands for.
    async fn refusal(&self, resp: Response) -> ClientError {
        let status = resp.status().as_u16();
        let body = match resp.text().await {
            Ok(body) => body,
            Err(source) => {
                return ClientError::Request {
                    url: self.base.clone(),
                    source,
                }
            }
        };
        match serde_json::from_str::<Problem>(&body) {
            Ok(problem) => ClientError::Problem {
                problem: Box::new(problem),
            },
            Err(_) => ClientError::Status { status, body },
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        req: RequestBuilder,
        what: &str,
    ) -> Result<T, ClientError> {
        let resp = self.send(req).await?;
        let bytes = resp.bytes().await.map_err(|source| ClientError::Request {
            url: self.base.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            what: what.to_string(),
            source,
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(self.request(Method::GET, path), path).await
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.json(self.request(Method::POST, path).json(body), path)
            .await
    }

    async fn delete(&self, path: &str, actor: Option<&str>) -> Result<(), ClientError> {
        let mut req = self.request(Method::DELETE, path);
        if let Some(actor) = actor {
            req = req.header(ACTOR_HEADER, actor);
        }
        self.send(req).await.map(drop)
    }

    // Topics.

    /// Every topic.
    pub async fn list_topics(&self) -> Result<TopicList, ClientError> {
        self.get(&routes::topics()).await
    }

    /// Creates a topic.
    pub async fn create_topic(&self, req: &CreateTopicRequest) -> Result<TopicView, ClientError> {
        self.post(&routes::topics(), req).await
    }

    /// One topic: its spec and each partition's offsets.
    pub async fn topic(&self, name: &str) -> Result<TopicView, ClientError> {
        self.get(&routes::topic(name)).await
    }

    /// Deletes a topic, its events and its subscriptions.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        self.delete(&routes::topic(name), None).await
    }

    // Events.

    /// Publishes one structured CloudEvent to each of `topics`.
    pub async fn publish<E: Serialize + ?Sized>(
        &self,
        topics: &[&str],
        event: &E,
    ) -> Result<PublishResponse, ClientError> {
        let body = Encoded::structured(event).map_err(|source| ClientError::Decode {
            what: "the event".into(),
            source,
        })?;
        self.publish_encoded(topics, &body).await
    }

    /// Publishes a batch of CloudEvents to each of `topics`: all stored, or none.
    pub async fn publish_batch<E: Serialize>(
        &self,
        topics: &[&str],
        events: &[E],
    ) -> Result<PublishResponse, ClientError> {
        let body = Encoded::batch(events).map_err(|source| ClientError::Decode {
            what: "the batch".into(),
            source,
        })?;
        self.publish_encoded(topics, &body).await
    }

    /// Publishes a body already encoded.
    pub async fn publish_encoded(
        &self,
        topics: &[&str],
        body: &Encoded,
    ) -> Result<PublishResponse, ClientError> {
        let path = routes::publish(topics);
        let req = self
            .request(Method::POST, &path)
            .header(reqwest::header::CONTENT_TYPE, body.content_type)
            .body(body.body.clone());
        self.json(req, &path).await
    }

    /// Reads stored events.
    pub async fn read(&self, topic: &str, query: &ReadQuery) -> Result<ReadResponse, ClientError> {
        let path = routes::events(topic);
        self.json(self.request(Method::GET, &path).query(query), &path)
            .await
    }

    /// Reads one subject's events with their versions (the embedded log's per-subject
    /// streams; other backends answer 501 `unsupported`).
    pub async fn read_subject(
        &self,
        topic: &str,
        subject: &str,
        query: &SubjectReadQuery,
    ) -> Result<SubjectEventsResponse, ClientError> {
        let path = routes::subject_events(topic, subject);
        self.json(self.request(Method::GET, &path).query(query), &path)
            .await
    }

    /// Follows a topic live (Server-Sent Events).
    pub async fn stream(&self, topic: &str, query: &LiveQuery) -> Result<LiveStream, ClientError> {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(from) = &query.from {
            q.append_pair("from", from);
        }
        for t in &query.types {
            q.append_pair("type", t);
        }
        if let Some(f) = &query.filter {
            q.append_pair("filter", f);
        }
        if let Some(id) = &query.last_event_id {
            q.append_pair("last_event_id", id);
        }
        let path = format!("{}?{}", routes::stream(topic), q.finish());
        let resp = self.send(self.request(Method::GET, &path)).await?;
        Ok(LiveStream::new(resp, self.base.clone()))
    }

    // Subscriptions.

    /// Creates a pull subscription on `topic`.
    pub async fn create_subscription(
        &self,
        topic: &str,
        req: &CreateSubscriptionRequest,
    ) -> Result<SubscriptionView, ClientError> {
        self.post(&routes::topic_subscriptions(topic), req).await
    }

    /// Every subscription.
    pub async fn list_subscriptions(&self) -> Result<SubscriptionList, ClientError> {
        self.get(&routes::subscriptions()).await
    }

    /// One subscription and its live state.
    pub async fn subscription(&self, name: &str) -> Result<SubscriptionView, ClientError> {
        self.get(&routes::subscription(name)).await
    }

    /// Deletes a subscription and all it stored.
    pub async fn delete_subscription(&self, name: &str) -> Result<(), ClientError> {
        self.delete(&routes::subscription(name), None).await
    }

    /// Pulls deliveries, leased until acked, nacked or timed out.
    pub async fn pull(&self, name: &str, req: &PullRequest) -> Result<PullResponse, ClientError> {
        self.post(&routes::subscription_verb(name, "pull"), req)
            .await
    }

    /// [`Client::pull`], with each event left as the JSON text the server sent: no JSON
    /// tree is built for an event the caller hands on without looking inside.
    pub async fn pull_raw(
        &self,
        name: &str,
        req: &PullRequest,
    ) -> Result<RawPullResponse, ClientError> {
        self.post(&routes::subscription_verb(name, "pull"), req)
            .await
    }

    /// Acks deliveries.
    pub async fn ack(&self, name: &str, req: &AckRequest) -> Result<AckResponse, ClientError> {
        self.post(&routes::subscription_verb(name, "ack"), req)
            .await
    }

    /// Nacks deliveries: they are retried under the policy, or after `delay_ms`.
    pub async fn nack(&self, name: &str, req: &NackRequest) -> Result<AckResponse, ClientError> {
        self.post(&routes::subscription_verb(name, "nack"), req)
            .await
    }

    /// Moves the subscription's cursor.
    pub async fn seek(&self, name: &str, req: &SeekRequest) -> Result<SeekResponse, ClientError> {
        self.post(&routes::subscription_verb(name, "seek"), req)
            .await
    }

    /// Rotates a webhook subscription's signing secret (the answer shows the new one,
    /// once); audited as `actor` when given.
    pub async fn rotate_secret(
        &self,
        name: &str,
        req: &RotateSecretRequest,
        actor: Option<&str>,
    ) -> Result<SubscriptionView, ClientError> {
        let path = routes::subscription_verb(name, "secret");
        let mut builder = self.request(Method::PUT, &path).json(req);
        if let Some(actor) = actor {
            builder = builder.header(ACTOR_HEADER, actor);
        }
        self.json(builder, &path).await
    }

    /// Enables a webhook target disabled by a 410 Gone; audited as `actor` when given.
    pub async fn enable_subscription(
        &self,
        name: &str,
        actor: Option<&str>,
    ) -> Result<SubscriptionView, ClientError> {
        let path = routes::subscription_verb(name, "enable");
        let mut builder = self.request(Method::POST, &path);
        if let Some(actor) = actor {
            builder = builder.header(ACTOR_HEADER, actor);
        }
        self.json(builder, &path).await
    }

    // API keys.

    /// Makes an API key; the answer holds the key, shown this once.
    pub async fn create_key(&self, req: &CreateKeyRequest) -> Result<CreatedKey, ClientError> {
        self.post(routes::KEYS, req).await
    }

    /// Every API key, without secrets.
    pub async fn list_keys(&self) -> Result<KeyList, ClientError> {
        self.get(routes::KEYS).await
    }

    /// Revokes API key `id`.
    pub async fn revoke_key(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&routes::key(id), None).await
    }

    /// A page of the server's audit log (admin): entries after `query.after`, oldest
    /// first.
    pub async fn server_audit(&self, query: &AuditLogQuery) -> Result<AuditLogPage, ClientError> {
        self.json(
            self.request(Method::GET, routes::AUDIT).query(query),
            routes::AUDIT,
        )
        .await
    }

    // Dead letters.

    /// The dead letters `query` selects.
    pub async fn dead_letters(&self, name: &str, query: &DlqQuery) -> Result<DlqList, ClientError> {
        let path = routes::subscription_verb(name, "dlq");
        self.json(self.request(Method::GET, &path).query(query), &path)
            .await
    }

    /// One dead letter.
    pub async fn dead_letter(&self, name: &str, entry: &str) -> Result<DlqEntryView, ClientError> {
        self.get(&routes::dlq_entry(name, entry)).await
    }

    /// The audit log of a subscription's dead-letter actions, oldest first.
    pub async fn audit_log(&self, name: &str) -> Result<AuditList, ClientError> {
        self.get(&routes::subscription_verb(name, "audit")).await
    }

    /// Delivers dead letters again; audited as `actor` when given.
    pub async fn redrive(
        &self,
        name: &str,
        req: &RedriveRequest,
        actor: Option<&str>,
    ) -> Result<RedriveResponse, ClientError> {
        let path = routes::redrive(name);
        let mut builder = self.request(Method::POST, &path).json(req);
        if let Some(actor) = actor {
            builder = builder.header(ACTOR_HEADER, actor);
        }
        self.json(builder, &path).await
    }

    /// Discards a dead letter; audited as `actor` when given.
    pub async fn discard(
        &self,
        name: &str,
        entry: &str,
        actor: Option<&str>,
    ) -> Result<(), ClientError> {
        self.delete(&routes::dlq_entry(name, entry), actor).await
    }

    // Schemas.

    /// Every event type with a schema.
    pub async fn schemas(&self) -> Result<SchemaList, ClientError> {
        self.get(&routes::schemas()).await
    }

    /// One version (`1`, `2`, … or `latest`) of a type's schema.
    pub async fn schema_version(
        &self,
        event_type: &str,
        version: &str,
    ) -> Result<SchemaVersionView, ClientError> {
        self.get(&routes::schema_version(event_type, version)).await
    }

    /// Registers a schema version, checked against the type's compatibility mode.
    pub async fn register_schema(
        &self,
        event_type: &str,
        req: &SchemaRequest,
    ) -> Result<RegistrationView, ClientError> {
        self.post(&routes::schema_verb(event_type, "versions"), req)
            .await
    }

    /// What registering a schema would do, without registering it.
    pub async fn check_schema(
        &self,
        event_type: &str,
        req: &SchemaRequest,
    ) -> Result<CheckView, ClientError> {
        self.post(&routes::schema_verb(event_type, "check"), req)
            .await
    }

    /// Sets a type's compatibility mode.
    pub async fn set_compatibility(
        &self,
        event_type: &str,
        req: &CompatibilityRequest,
    ) -> Result<CompatibilityView, ClientError> {
        let path = routes::schema_verb(event_type, "compatibility");
        self.json(self.request(Method::PUT, &path).json(req), &path)
            .await
    }

    /// Whether a structured CloudEvent would be accepted by a publish.
    pub async fn validate<E: Serialize + ?Sized>(
        &self,
        event: &E,
    ) -> Result<ValidationView, ClientError> {
        let body = Encoded::structured(event).map_err(|source| ClientError::Decode {
            what: "the event".into(),
            source,
        })?;
        let path = routes::validate();
        let req = self
            .request(Method::POST, &path)
            .header(reqwest::header::CONTENT_TYPE, body.content_type)
            .body(body.body);
        self.json(req, &path).await
    }

    // Operations.

    /// `GET /v1/cluster`: the servers sharing the backend and who drives what.
    pub async fn cluster(&self) -> Result<crmbus_api::ClusterView, ClientError> {
        self.get(&routes::cluster()).await
    }

    /// `GET /healthz`: the process is up.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.get(&routes::healthz()).await
    }

    /// `GET /readyz`: the storage answers; an error (503) while it does not.
    pub async fn ready(&self) -> Result<Health, ClientError> {
        self.get(&routes::readyz()).await
    }
}
