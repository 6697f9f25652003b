//! Telling people how a job ended: a webhook, an SNS message, or an e-mail (Amazon SES, or
//! an SMTP server for self-hosted runs), carrying the real status — counts written and
//! rejected, rejects by rule, duration — and links to the merged output and the summary:
//! presigned URLs for S3 (valid [`link_lifetime`], 24 hours unless `SLUICEBOX_LINK_HOURS`
//! says otherwise, and never past the signing credentials' own expiry, which the message
//! states), paths for a local bucket.
//!
//! A job that completed with rejects says so in its status and subject
//! (`completed_with_rejects`); a failed one says `failed`, with its error. Notifications are
//! sent once, by the party whose write ended the job (the gather that completed it, the worker
//! that failed it); a notification that cannot be delivered after a few attempts is logged and
//! does not change the job's outcome.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tracing::{info, warn};

use crate::batch::job::{Failure, RecordCounts, Summary};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::config::{Notify, NotifyTarget};

/// How long presigned links in a notification work by default: they are bearer links to the
/// whole output, sent by mail, SNS or webhook.
pub const DEFAULT_LINK_HOURS: u64 = 24;

/// The environment variable that sets how long presigned links work, in hours (1–168: S3
/// signs for seven days at most).
pub const LINK_HOURS: &str = "SLUICEBOX_LINK_HOURS";

/// How long presigned links work: [`LINK_HOURS`], else [`DEFAULT_LINK_HOURS`]; a value that
/// is not a number of hours from 1 to 168 is logged and the default used.
pub fn link_lifetime() -> Duration {
    let hours = match std::env::var(LINK_HOURS) {
        Err(_) => DEFAULT_LINK_HOURS,
        Ok(v) => {
            match v.trim().parse::<u64>() {
                Ok(h) if (1..=168).contains(&h) => h,
                _ => {
                    warn!("{LINK_HOURS}={v:?} is not a number of hours from 1 to 168; links work {DEFAULT_LINK_HOURS} hours");
                    DEFAULT_LINK_HOURS
                }
            }
        }
    };
    Duration::from_secs(hours * 3600)
}

/// The inputs a message names; past them it gives their count, and the manifest (linked)
/// names every one. With the error cut at [`MAX_ERROR_BYTES`], a message stays well under
/// the smallest target's limit (SNS: 256 KB) however many inputs a job has.
pub const MAX_LISTED_INPUTS: usize = 10;
/// The most bytes of a failed job's error a message carries.
pub const MAX_ERROR_BYTES: usize = 8 << 10;

/// Links to a job's objects, and when the presigned ones stop working.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Links {
    /// Name → a presigned URL or a path.
    pub urls: BTreeMap<String, String>,
    /// When presigned links stop working (RFC 3339); `None` for paths.
    pub expire_at: Option<String>,
}

/// What a notification says (a webhook's JSON body and an SNS message; e-mails carry its
/// `text`). Fields are stable: scripts read them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// The job.
    pub job_id: String,
    /// `succeeded`, `completed_with_rejects` or `failed`.
    pub status: String,
    /// One line, for a subject.
    pub subject: String,
    /// The inputs: the first [`MAX_LISTED_INPUTS`] (the manifest names every one).
    pub inputs: Vec<String>,
    /// How many inputs `inputs` stands for: the job's (a failed job's message names only the
    /// input of the chunk that failed it: 1).
    pub inputs_total: usize,
    /// Record counts (absent for a failed job).
    pub records: Option<RecordCounts>,
    /// Rejects by rule.
    pub rejects_by_rule: BTreeMap<String, u64>,
    /// From creation to the end, ms (absent for a failed job).
    pub duration_ms: Option<i64>,
    /// Links to the merged output, the rejects and the summary (a presigned URL or a path).
    pub links: BTreeMap<String, String>,
    /// When the presigned links stop working (RFC 3339); absent for paths.
    pub links_expire_at: Option<String>,
    /// Why the job failed.
    pub error: Option<String>,
    /// The `[rejects]` thresholds the job was judged by, when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<crate::model::rejects::Thresholds>,
    /// The threshold that stopped the job, with the figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<crate::model::rejects::Stop>,
    /// For a redrive: the job whose rejected records it took again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redriven_from: Option<String>,
    /// The message as text, for a person.
    pub text: String,
}

impl Message {
    /// The message for a job that completed.
    pub fn finished(s: &Summary, links: Links) -> Message {
        let r = &s.records;
        let subject = match s.status.as_str() {
            "succeeded" => format!("sluicebox: job {} succeeded: {} records written", s.job_id, r.written),
            _ => format!("sluicebox: job {} completed with {} rejected of {} records", s.job_id, r.rejected, r.total),
        };
        let mut text = format!(
            "{subject}\n\nwritten {}, rejected {}, filtered {} of {} records in {:.1} s\n",
            r.written,
            r.rejected,
            r.filtered,
            r.total,
            s.timings.duration_ms as f64 / 1000.0
        );
        for (rule, n) in &s.rejects_by_rule {
            text += &format!("  rejected by {rule}: {n}\n");
        }
        if let Some(t) = &s.thresholds {
            text += &format!("thresholds: {} (not passed)\n", t.describe());
        }
        if let Some(from) = &s.redriven_from {
            text += &format!("a redrive of job {from}: its rejected records, taken again\n");
        }
        if s.inputs.len() > MAX_LISTED_INPUTS {
            text += &format!("\n{} inputs: the manifest names every one\n", s.inputs.len());
        }
        text += &links_text(&links);
        Message {
            job_id: s.job_id.clone(),
            status: s.status.clone(),
            subject,
            inputs: s.inputs.iter().take(MAX_LISTED_INPUTS).map(|i| i.location.clone()).collect(),
            inputs_total: s.inputs.len(),
            records: Some(r.clone()),
            rejects_by_rule: s.rejects_by_rule.clone(),
            duration_ms: Some(s.timings.duration_ms),
            links: links.urls,
            links_expire_at: links.expire_at,
            error: None,
            thresholds: s.thresholds,
            stopped_by: None,
            redriven_from: s.redriven_from.clone(),
            text,
        }
    }

    /// The message for a job stopped by a `[rejects]` threshold: why, with the figures, the
    /// counts of the chunks worked, and what became of the sink.
    pub fn stopped(s: &Summary, f: &Failure, links: Links) -> Message {
        let mut m = Message::failed(f, Links::default());
        let Some(stop) = &s.stopped_by else { return m };
        let r = &s.records;
        m.subject = format!(
            "sluicebox: job {} FAILED: {} rejected, over [rejects] {} ({})",
            s.job_id,
            r.rejected,
            stop.threshold,
            stop.limit_text()
        );
        let mut text = format!("{}\n\n{stop}.\n", m.subject);
        text += &format!(
            "Of the {} records worked: written {}, rejected {}, filtered {}; {} records not worked.\n",
            stop.records_seen, r.written, r.rejected, r.filtered, r.not_worked
        );
        for (rule, n) in &s.rejects_by_rule {
            text += &format!("  rejected by {rule}: {n}\n");
        }
        text += &format!("sink: {}\n", stop.sink);
        if let Some(from) = &s.redriven_from {
            text += &format!("a redrive of job {from}\n");
        }
        text += &links_text(&links);
        m.inputs = s.inputs.iter().take(MAX_LISTED_INPUTS).map(|i| i.location.clone()).collect();
        m.inputs_total = s.inputs.len();
        m.records = Some(r.clone());
        m.rejects_by_rule = s.rejects_by_rule.clone();
        m.duration_ms = Some(s.timings.duration_ms);
        m.links = links.urls;
        m.links_expire_at = links.expire_at;
        m.thresholds = s.thresholds;
        m.stopped_by = Some(stop.clone());
        m.redriven_from = s.redriven_from.clone();
        m.text = text;
        m
    }

    /// The message for a job that failed.
    pub fn failed(f: &Failure, links: Links) -> Message {
        let subject = format!("sluicebox: job {} FAILED", f.job_id);
        let error = cut(&f.error, MAX_ERROR_BYTES);
        let text = format!(
            "{subject}\n\nchunk {} of {} failed on attempt {}: {}\n{}",
            f.chunk,
            f.input,
            f.attempts,
            error,
            links_text(&links)
        );
        Message {
            job_id: f.job_id.clone(),
            status: "failed".into(),
            subject,
            inputs: vec![f.input.clone()],
            inputs_total: 1,
            records: None,
            rejects_by_rule: BTreeMap::new(),
            duration_ms: None,
            links: links.urls,
            links_expire_at: links.expire_at,
            error: Some(error),
            thresholds: None,
            stopped_by: f.stopped_by.as_deref().cloned(),
            redriven_from: None,
            text,
        }
    }
}

/// `text` cut to at most `max` bytes, at a character boundary, with `…` when cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let end = (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    format!("{}…", &text[..end])
}

fn links_text(links: &Links) -> String {
    let mut text: String = links.urls.iter().map(|(name, url)| format!("\n{name}: {url}\n")).collect();
    if let Some(at) = &links.expire_at {
        text += &format!("\nThe links work until {at}.\n");
    }
    text
}

/// Links a person can open for these objects of the engine's bucket (`name` → URL as the
/// summary gives it): presigned GET URLs for S3, paths for a local bucket.
pub async fn links(engine: &Engine, objects: &[(&str, &str)]) -> Links {
    let mut out = Links::default();
    for (name, url) in objects {
        let link = match url.strip_prefix("file://") {
            Some(path) => Some(path.to_string()),
            None => match presign(engine, url).await {
                Some((link, until)) => {
                    out.expire_at = Some(until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                    Some(link)
                }
                None => Some(url.to_string()),
            },
        };
        if let Some(link) = link {
            out.urls.insert(name.to_string(), link);
        }
    }
    out
}

/// A presigned GET URL for `url` and when it stops working: after [`link_lifetime`], or when
/// the signing credentials expire if that is sooner (a Lambda function's role credentials
/// last hours, and a link signed with them dies with them).
#[cfg(feature = "aws")]
async fn presign(engine: &Engine, url: &str) -> Option<(String, chrono::DateTime<chrono::Utc>)> {
    use aws_credential_types::provider::ProvideCredentials;
    use object_store::signer::{Method, Signer};
    let (bucket, key) = url.strip_prefix("s3://")?.split_once('/')?;
    let conf = engine.cloud.sdk("bucket").ok()?;
    let lifetime = link_lifetime();
    let mut until = chrono::Utc::now() + chrono::Duration::from_std(lifetime).ok()?;
    if let Some(provider) = conf.credentials_provider() {
        if let Some(expiry) = provider.provide_credentials().await.ok().and_then(|c| c.expiry()) {
            until = until.min(chrono::DateTime::<chrono::Utc>::from(expiry));
        }
    }
    let store = crate::backends::aws::s3_store(conf, bucket, None).ok()?;
    match store.0.signed_url(Method::GET, &crate::backends::bucket::key_path(key), lifetime).await {
        Ok(signed) => Some((signed.to_string(), until)),
        Err(e) => {
            warn!("cannot presign {url}: {e}");
            None
        }
    }
}

#[cfg(not(feature = "aws"))]
async fn presign(_engine: &Engine, _url: &str) -> Option<(String, chrono::DateTime<chrono::Utc>)> {
    None
}

/// Send `message` to every target of `notify` that wants its status, each with a few
/// attempts; failures are logged, never returned: the job's outcome stands.
pub async fn send(engine: &Engine, notify: &[Notify], message: &Message) {
    for n in notify.iter().filter(|n| n.on.contains(&message.status)) {
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=3 {
            match send_one(engine, n, message).await {
                Ok(()) => {
                    info!(job = %message.job_id, target = ?n.target, "notified");
                    break;
                }
                Err(e) if attempt < 3 => {
                    warn!(job = %message.job_id, target = ?n.target, "cannot notify, will retry: {e}");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => warn!(job = %message.job_id, target = ?n.target, "cannot notify; giving up: {e}"),
            }
        }
    }
}

async fn send_one(engine: &Engine, n: &Notify, message: &Message) -> Result<()> {
    match &n.target {
        NotifyTarget::Webhook(url) => webhook(url, message).await,
        NotifyTarget::Sns(topic) => sns(engine, topic, message).await,
        NotifyTarget::Ses(to) => ses(engine, n.from.as_deref().unwrap_or_default(), to, message).await,
        NotifyTarget::Smtp(to) => smtp(n.from.as_deref().unwrap_or_default(), to, message).await,
    }
}

async fn webhook(url: &crate::model::web::SecretUrl, message: &Message) -> Result<()> {
    let body = serde_json::to_vec(message).map_err(|e| Error::internal("json", "notification", e))?;
    let client = crate::model::web::client(Duration::from_secs(10))?;
    let status = crate::model::web::post_json(&client, url, "notify.to", body).await?;
    if !status.is_success() {
        return Err(Error::backend(
            crate::error::Backend::Webhook,
            format!("POST {url}"),
            format!("answered {status}"),
        ));
    }
    Ok(())
}

#[cfg(feature = "aws")]
async fn sns(engine: &Engine, topic: &str, message: &Message) -> Result<()> {
    let conf = engine.cloud.sdk("notify")?;
    let body = serde_json::to_string(message).map_err(|e| Error::internal("json", "notification", e))?;
    // SNS subjects: at most 100 characters, no line breaks.
    let subject: String = message.subject.chars().take(100).collect();
    crate::backends::aws::sns(conf).publish().topic_arn(topic).subject(subject).message(body).send().await.map_err(
        |e| Error::backend(crate::error::Backend::Sns, format!("Publish to {topic}"), e.into_service_error()),
    )?;
    Ok(())
}

#[cfg(feature = "aws")]
async fn ses(engine: &Engine, from: &str, to: &str, message: &Message) -> Result<()> {
    use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message as Mail};
    let conf = engine.cloud.sdk("notify")?;
    let content = |text: &str| {
        Content::builder()
            .data(text)
            .charset("UTF-8")
            .build()
            .map_err(|e| Error::backend(crate::error::Backend::Ses, "message", e))
    };
    let mail = Mail::builder()
        .subject(content(&message.subject)?)
        .body(Body::builder().text(content(&message.text)?).build())
        .build();
    aws_sdk_sesv2::Client::new(conf)
        .send_email()
        .from_email_address(from)
        .destination(Destination::builder().to_addresses(to).build())
        .content(EmailContent::builder().simple(mail).build())
        .send()
        .await
        .map_err(|e| {
            Error::backend(crate::error::Backend::Ses, format!("SendEmail to {to}"), e.into_service_error())
        })?;
    Ok(())
}

#[cfg(not(feature = "aws"))]
async fn sns(_: &Engine, topic: &str, _: &Message) -> Result<()> {
    Err(Error::config("notify", format!("sns://{topic} needs the `aws` feature, which this build lacks")))
}

#[cfg(not(feature = "aws"))]
async fn ses(_: &Engine, _: &str, to: &str, _: &Message) -> Result<()> {
    Err(Error::config("notify", format!("ses://{to} needs the `aws` feature, which this build lacks")))
}

/// E-mail through the SMTP server `SLUICEBOX_SMTP_URL` names (`smtp://host:port`, or
/// `smtps://user:password@host` for TLS with credentials).
async fn smtp(from: &str, to: &str, message: &Message) -> Result<()> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
    let server = std::env::var("SLUICEBOX_SMTP_URL")
        .map_err(|_| Error::config("SLUICEBOX_SMTP_URL", "smtp:// notifications need the SMTP server's URL"))?;
    let bad = |what: &str, e: &dyn std::fmt::Display| Error::config("notify", format!("{what}: {e}"));
    let email = lettre::Message::builder()
        .from(from.parse().map_err(|e| bad(&format!("from {from:?}"), &e))?)
        .to(to.parse().map_err(|e| bad(&format!("to {to:?}"), &e))?)
        .subject(&message.subject)
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(message.text.clone())
        .map_err(|e| bad("the e-mail", &e))?;
    let shown = crate::model::web::redact(&server);
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&server)
        .map_err(|e| bad(&format!("SLUICEBOX_SMTP_URL {shown}"), &e))?
        .timeout(Some(Duration::from_secs(10)))
        .build();
    transport
        .send(email)
        .await
        .map_err(|e| Error::backend(crate::error::Backend::Smtp, format!("sending to {to} through {shown}"), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_of_thousands_of_inputs_is_told_in_a_message_sns_takes() {
        let input = |n: usize| {
            serde_json::json!({"location": format!("s3://bucket/incoming/{}/example-{n:05}.json", "x".repeat(200)),
                               "bytes": 1_000, "records": 1})
        };
        let summary: Summary = serde_json::from_value(serde_json::json!({
            "job_id": "j", "status": "succeeded",
            "inputs": (0..10_000).map(input).collect::<Vec<_>>(),
            "records": {"total": 10_000, "written": 10_000, "rejected": 0, "filtered": 0},
            "chunks": {"total": 10, "done": 10}, "rejects_by_rule": {},
            "outputs": {"output": "o", "rejects": "r", "manifest": "m", "summary": "s"},
            "sink": null, "timings": {"started_at": "", "finished_at": "", "duration_ms": 1, "phases": {}},
            "records_per_s": 1.0
        }))
        .unwrap();
        let links = Links { urls: BTreeMap::from([("manifest".into(), "m".into())]), expire_at: None };
        let m = Message::finished(&summary, links);
        assert_eq!((m.inputs.len(), m.inputs_total), (MAX_LISTED_INPUTS, 10_000));
        assert!(m.text.contains("10000 inputs: the manifest names every one") && m.text.contains("manifest: m"));
        let bytes = serde_json::to_vec(&m).unwrap().len();
        assert!(bytes < 64 << 10, "{bytes} bytes");
        let failure = Failure {
            job_id: "j".into(),
            chunk: 1,
            input: "s3://b/k".into(),
            version: String::new(),
            attempts: 3,
            error: "é".repeat(100_000),
            stopped_by: None,
        };
        let m = Message::failed(&failure, Links::default());
        assert!(
            m.error.as_ref().unwrap().len() <= MAX_ERROR_BYTES + 3 && serde_json::to_vec(&m).unwrap().len() < 64 << 10
        );
    }
    use crate::model::config::NotifyConfig;

    #[test]
    fn targets_are_checked_with_the_key_named() {
        let parse = |to: &str, from: Option<&str>| {
            Notify::parse(&NotifyConfig { to: to.into(), from: from.map(str::to_string), on: None }, "notify[0]")
        };
        assert_eq!(
            parse("https://h.example/x", None).unwrap().target,
            NotifyTarget::Webhook(crate::model::web::SecretUrl::new("https://h.example/x"))
        );
        assert!(matches!(parse("sns://arn:aws:sns:us-east-1:1:t", None).unwrap().target, NotifyTarget::Sns(_)));
        let err = parse("ses://ops@example.com", None).unwrap_err().to_string();
        assert!(err.contains("notify[0].from"), "{err}");
        let err = parse("mailto:ops@example.com", None).unwrap_err().to_string();
        assert!(err.contains("notify[0].to"), "{err}");
        let bad_on = NotifyConfig { to: "https://h/x".into(), from: None, on: Some(vec!["done".into()]) };
        assert!(Notify::parse(&bad_on, "notify[1]").unwrap_err().to_string().contains("notify[1].on"));
    }
}
