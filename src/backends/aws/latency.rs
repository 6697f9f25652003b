//! Simulated latency for the AWS clients (a test and bench tool): an HTTP client for the SDK
//! that waits a drawn latency (a tokio sleep) before each request goes on, per service, and
//! can throttle DynamoDB writes above a write capacity or answer a table's writes itself
//! ([`SimulatedLatency`] says which); and the same wait for `object_store`'s S3 requests.
//! Nothing here is used unless a [`crate::backends::cloud::Cloud`] is made with it.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

pub use crate::backends::latency::SimulatedLatency;

/// What the layers share: the setting, the random draws and the write capacity left.
#[derive(Debug)]
struct Shared {
    sim: SimulatedLatency,
    rng: Mutex<fastrand::Rng>,
    bucket: Mutex<(f64, Instant)>,
    /// How much later than asked a sleep ends, on average, ns (tokio's timer rounds up to
    /// the next millisecond, and a busy machine wakes late): taken off the next sleeps, so
    /// the waits keep the distribution's mean.
    late_ns: AtomicI64,
    /// Waits so far, and their drawn and actual totals, ns.
    waits: AtomicU64,
    drawn_ns: AtomicU64,
    waited_ns: AtomicU64,
}

impl Shared {
    /// Wait a latency drawn for a request to `service`.
    async fn wait(&self, service: &str) {
        let drawn = self.draw(service);
        if drawn.is_zero() {
            return;
        }
        let started = Instant::now();
        let late = Duration::from_nanos(self.late_ns.load(Ordering::Relaxed).max(0) as u64);
        let asked = drawn.saturating_sub(late);
        tokio::time::sleep(asked).await;
        let waited = started.elapsed();
        // A moving average of how late sleeps end, over about the last 50 (racy updates from
        // requests at once lose a sample now and then, which an average can afford).
        let overshoot = waited.as_nanos() as i64 - asked.as_nanos() as i64;
        let was = self.late_ns.load(Ordering::Relaxed);
        self.late_ns.store(was + (overshoot - was) / 50, Ordering::Relaxed);
        self.waits.fetch_add(1, Ordering::Relaxed);
        self.drawn_ns.fetch_add(drawn.as_nanos() as u64, Ordering::Relaxed);
        self.waited_ns.fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
    }

    /// A latency drawn for a request to `service` (zero for a service not slowed).
    fn draw(&self, service: &str) -> Duration {
        let Some(latency) = self.sim.of(service) else { return Duration::ZERO };
        latency.sample(&mut self.rng.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether `units` writes fit in what is left of this second's capacity (taking them).
    fn admit(&self, units: f64) -> bool {
        let Some(per_s) = self.sim.write_capacity else { return true };
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * per_s).min(per_s);
        b.1 = now;
        if b.0 < units {
            return false;
        }
        b.0 -= units;
        true
    }
}

/// The layer, made once per setting; [`SimulatedLayer::sdk_config`] puts it into an SDK
/// configuration and [`SimulatedLayer::s3_connector`] into an `object_store` S3 client.
#[derive(Debug, Clone)]
pub struct SimulatedLayer(Arc<Shared>);

impl SimulatedLayer {
    /// A layer adding what `sim` says.
    pub fn new(sim: SimulatedLatency) -> Self {
        let rng = Mutex::new(fastrand::Rng::with_seed(sim.seed));
        let bucket = Mutex::new((sim.write_capacity.unwrap_or(0.0), Instant::now()));
        let zero = || AtomicU64::new(0);
        let late_ns = AtomicI64::new(0);
        SimulatedLayer(Arc::new(Shared {
            sim,
            rng,
            bucket,
            late_ns,
            waits: zero(),
            drawn_ns: zero(),
            waited_ns: zero(),
        }))
    }

    /// Requests slowed so far, and the mean of their drawn and actual waits, seconds.
    pub fn waits(&self) -> (u64, f64, f64) {
        let n = self.0.waits.load(Ordering::Relaxed);
        let mean = |total: &AtomicU64| total.load(Ordering::Relaxed) as f64 / 1e9 / n.max(1) as f64;
        (n, mean(&self.0.drawn_ns), mean(&self.0.waited_ns))
    }

    /// The setting.
    pub fn setting(&self) -> &SimulatedLatency {
        &self.0.sim
    }

    /// `conf` with every request going through this layer (then through its own HTTP client,
    /// or the SDK's default one).
    pub fn sdk_config(&self, conf: &aws_config::SdkConfig) -> aws_config::SdkConfig {
        let inner = conf.http_client().unwrap_or_else(|| {
            use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
            aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::AwsLc)).build_https()
        });
        conf.to_builder().http_client(LatencyClient { inner, shared: self.0.clone() }).build()
    }

    /// An `object_store` connector whose requests wait the S3 latency first.
    pub fn s3_connector(&self) -> S3Connector {
        S3Connector { shared: self.0.clone() }
    }
}

#[derive(Debug)]
struct LatencyClient {
    inner: SharedHttpClient,
    shared: Arc<Shared>,
}

impl HttpClient for LatencyClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        let inner = self.inner.http_connector(settings, components);
        SharedHttpConnector::new(LatencyConnector { inner, shared: self.shared.clone() })
    }
}

#[derive(Debug)]
struct LatencyConnector {
    inner: SharedHttpConnector,
    shared: Arc<Shared>,
}

impl HttpConnector for LatencyConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let service = signed_service(&request).unwrap_or_default();
        let answer = (service == "dynamodb").then(|| self.answer_write(&request)).flatten();
        let (inner, shared) = (self.inner.clone(), self.shared.clone());
        HttpConnectorFuture::new(async move {
            shared.wait(&service).await;
            match answer {
                Some(response) => Ok(response),
                None => inner.call(request).await,
            }
        })
    }
}

impl LatencyConnector {
    /// The answer this layer gives a DynamoDB write itself: a throttle above the write
    /// capacity, or a stand-in table's success; `None`: the request goes on.
    fn answer_write(&self, request: &HttpRequest) -> Option<HttpResponse> {
        let op = request.headers().get("x-amz-target")?.rsplit('.').next()?.to_string();
        if op != "PutItem" && op != "BatchWriteItem" {
            return None;
        }
        let body: serde_json::Value = serde_json::from_slice(request.body().bytes()?).ok()?;
        let (table, items) = match op.as_str() {
            "PutItem" => (body["TableName"].as_str()?.to_string(), 1),
            _ => {
                let (table, writes) = body["RequestItems"].as_object()?.iter().next()?;
                (table.clone(), writes.as_array().map_or(0, Vec::len))
            }
        };
        if !self.shared.admit(items as f64) {
            let body = serde_json::json!({
                "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                "message": "The level of configured provisioned throughput for the table was exceeded (simulated)",
            });
            return Some(json_response(400, &body));
        }
        if !self.shared.sim.stands_in_for(&table) {
            return None;
        }
        let consumed = serde_json::json!({"TableName": table, "CapacityUnits": items as f64});
        let body = match op.as_str() {
            "PutItem" => serde_json::json!({"ConsumedCapacity": consumed}),
            _ => serde_json::json!({"UnprocessedItems": {}, "ConsumedCapacity": [consumed]}),
        };
        Some(json_response(200, &body))
    }
}

/// A DynamoDB-style JSON answer.
fn json_response(status: u16, body: &serde_json::Value) -> HttpResponse {
    let Ok(status) = aws_smithy_runtime_api::http::StatusCode::try_from(status) else {
        unreachable!("{status} is an HTTP status")
    };
    let mut response = HttpResponse::new(status, SdkBody::from(body.to_string()));
    response.headers_mut().insert("content-type", "application/x-amz-json-1.0");
    response
}

/// The service a request is signed for: the fourth part of SigV4's credential scope
/// (`Credential=KEY/DATE/REGION/SERVICE/aws4_request`).
fn signed_service(request: &HttpRequest) -> Option<String> {
    let auth = request.headers().get("authorization")?;
    let scope = auth.split("Credential=").nth(1)?;
    scope.split(['/', ',']).nth(3).map(str::to_string)
}

/// `object_store`'s HTTP client for S3, waiting the S3 latency before each request.
#[derive(Debug)]
pub struct S3Connector {
    shared: Arc<Shared>,
}

impl object_store::client::HttpConnector for S3Connector {
    fn connect(&self, options: &object_store::ClientOptions) -> object_store::Result<object_store::client::HttpClient> {
        let inner = object_store::client::ReqwestConnector::default().connect(options)?;
        Ok(object_store::client::HttpClient::new(S3Service { inner, shared: self.shared.clone() }))
    }
}

#[derive(Debug)]
struct S3Service {
    inner: object_store::client::HttpClient,
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl object_store::client::HttpService for S3Service {
    async fn call(
        &self,
        req: object_store::client::HttpRequest,
    ) -> Result<object_store::client::HttpResponse, object_store::client::HttpError> {
        self.shared.wait("s3").await;
        self.inner.execute(req).await
    }
}
