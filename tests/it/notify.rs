//! How a job ended, told to people: a webhook and an e-mail through an SMTP server (both
//! served by this test on loopback), with the real status, counts and links; the input moved
//! to its archive once the job completed, and left in place when it failed.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sluicebox::backends::sink::Sink;
use sluicebox::batch::job::RunOptions;
use sluicebox::engine::Engine;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// An HTTP server on loopback that answers every request 200 and hands over its body.
pub(crate) async fn webhook() -> (String, mpsc::UnboundedReceiver<serde_json::Value>) {
    webhook_answering("HTTP/1.1 200 OK\r\n").await
}

/// An HTTP server on loopback that answers every request with `status` (a status line and
/// any headers) and hands over its body.
async fn webhook_answering(status: &'static str) -> (String, mpsc::UnboundedReceiver<serde_json::Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    // A hook on loopback over plain http: allowed for this test process only.
    // SAFETY of the environment: set before any client of this process reads it.
    unsafe { std::env::set_var(sluicebox::model::web::ALLOW_PRIVATE, "true") };
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).await.unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).await.unwrap();
                let _ = tx.send(serde_json::from_slice(&body).unwrap());
                let _ = reader
                    .into_inner()
                    .write_all(format!("{status}content-length: 0\r\nconnection: close\r\n\r\n").as_bytes())
                    .await;
            });
        }
    });
    (url, rx)
}

/// An SMTP server on loopback that takes every message (RFC 5321's plain dialogue) and
/// hands over its data.
async fn smtp_server() -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("smtp://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut reader = BufReader::new(read);
                write.write_all(b"220 test ESMTP\r\n").await.unwrap();
                let mut data: Option<String> = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.unwrap() == 0 {
                        return;
                    }
                    if let Some(text) = data.as_mut() {
                        if line == ".\r\n" {
                            let _ = tx.send(data.take().unwrap());
                            write.write_all(b"250 queued\r\n").await.unwrap();
                        } else {
                            text.push_str(&line);
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let answer: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-test\r\n250 8BITMIME\r\n",
                        "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 ok\r\n",
                        "DATA" => {
                            data = Some(String::new());
                            b"354 go on\r\n"
                        }
                        "QUIT" => {
                            write.write_all(b"221 bye\r\n").await.unwrap();
                            return;
                        }
                        _ => b"502 not here\r\n",
                    };
                    write.write_all(answer).await.unwrap();
                }
            });
        }
    });
    (url, rx)
}

/// A job with rejects tells the webhook and the mailbox `completed_with_rejects` with the
/// summary's counts and links that open, and its input moves to the archive directory (here
/// relative: beside the input).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_told_with_its_real_status_and_its_input_archived() {
    let (hook, mut posted) = webhook().await;
    let (smtp, mut mailed) = smtp_server().await;
    // SAFETY of the environment: this test binary reads SLUICEBOX_SMTP_URL only here.
    unsafe { std::env::set_var("SLUICEBOX_SMTP_URL", &smtp) };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in").join("orders.csv");
    std::fs::create_dir_all(input.parent().unwrap()).unwrap();
    let orders = std::fs::read_to_string(orders_dir().join("orders.csv")).unwrap();
    let some: String = orders.lines().take(301).map(|l| format!("{l}\n")).collect();
    std::fs::write(&input, format!("{some}1,X,Y,Online,M,2/31/15,R,3/1/15\n")).unwrap();
    let archive = dir.path().join("in").join("done");
    let job = orders_job().replace("source = \"financial.csv\"", &format!("source = {:?}", orders_dir().join("financial.csv")))
        + &format!(
            "\n[[notify]]\nto = {hook:?}\n\n[[notify]]\nto = \"smtp://ops@example.com\"\nfrom = \"jobs@example.com\"\non = [\"completed_with_rejects\", \"failed\"]\n\n[[notify]]\nto = {hook:?}\non = [\"succeeded\"]\n\n[archive]\nto = {:?}\n",
            "done/"
        );
    let data = dir.path().join("data");
    let summary = run(&data, std::slice::from_ref(&input), &job, Path::new(".")).await.unwrap();
    assert_eq!(summary.status, "completed_with_rejects");

    let told =
        tokio::time::timeout(Duration::from_secs(10), posted.recv()).await.expect("the webhook was called").unwrap();
    assert_eq!(told["status"], "completed_with_rejects", "never plain success with rejects");
    assert_eq!(told["job_id"], summary.job_id.as_str());
    assert_eq!(told["records"], serde_json::to_value(&summary.records).unwrap());
    assert_eq!(told["rejects_by_rule"], serde_json::to_value(&summary.rejects_by_rule).unwrap());
    let output = told["links"]["output"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(output).unwrap().lines().count(), 1 + summary.records.written as usize);
    assert!(Path::new(told["links"]["summary"].as_str().unwrap()).exists());
    // The target for plain successes only was not told.
    assert!(tokio::time::timeout(Duration::from_millis(500), posted.recv()).await.is_err(), "told twice");

    let mail = tokio::time::timeout(Duration::from_secs(10), mailed.recv()).await.expect("an e-mail was sent").unwrap();
    assert!(mail.contains("Subject: sluicebox: job") && mail.contains("completed with 1 rejected of 301"), "{mail}");
    assert!(mail.contains("To: ops@example.com") && mail.contains("From: jobs@example.com"), "{mail}");

    assert!(!input.exists(), "the input moved once the job completed");
    let archived = archive.join(&summary.job_id).join("orders.csv");
    assert_eq!(std::fs::read_to_string(&archived).unwrap(), format!("{some}1,X,Y,Online,M,2/31/15,R,3/1/15\n"));

    // Both are recorded steps of the gather, so that one cut off after completing the outputs
    // is finished by the next gatherer without doing either twice.
    let gathered: serde_json::Value = serde_json::from_str(&job_file(&data, &summary.job_id, "gathered.json")).unwrap();
    let steps: Vec<&str> = gathered["steps"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(steps.ends_with(&["archive", "notify"]), "{steps:?}");
}

/// A job that fails (its sink is down through every attempt) is told as `failed` with the
/// error, once, and its input stays where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_is_told_failed_and_its_input_is_not_archived() {
    let (hook, mut posted) = webhook().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("items.csv");
    std::fs::write(&input, "id,name\n1,a\n2,b\n").unwrap();
    let mut engine = Engine::local(&dir.path().join("data")).unwrap();
    engine.sink_layer = Some(Arc::new(|_| Arc::new(BrokenSink) as Arc<dyn Sink>));
    let job = format!(
        "[key]\nfields = [\"id\"]\n[[notify]]\nto = {hook:?}\n[archive]\nto = {:?}\n",
        dir.path().join("archive").display().to_string()
    );
    let spec = spec(&job, dir.path());
    let inputs = local_inputs(&engine, std::slice::from_ref(&input)).await;
    let opts = RunOptions { max_attempts: 2, retry_delay: Duration::from_millis(100), ..RunOptions::default() };
    let run = match sluicebox::batch::job::prepare::prepare(&engine, &spec, inputs, &opts).await.unwrap() {
        sluicebox::batch::job::prepare::Prepared::Ready(run) => run,
        sluicebox::batch::job::prepare::Prepared::Complete(_) => panic!("a new job cannot be complete"),
    };
    sluicebox::batch::job::prepare::enqueue(&run).await.unwrap();
    let id = run.id().to_string();
    let pool = sluicebox::batch::pool::Pool::serve(&engine, &opts, 2);
    let told =
        tokio::time::timeout(Duration::from_secs(30), posted.recv()).await.expect("the webhook was called").unwrap();
    pool.stop();
    pool.join().await.unwrap();
    assert_eq!(told["status"], "failed");
    assert_eq!(told["job_id"], id.as_str());
    assert!(told["error"].as_str().unwrap().contains("the table is gone"), "{told}");
    assert!(told["subject"].as_str().unwrap().contains("FAILED"));
    assert!(Path::new(told["links"]["failure"].as_str().unwrap()).exists(), "{told}");
    assert!(input.exists(), "a failed job's input stays");
    assert!(tokio::time::timeout(Duration::from_millis(500), posted.recv()).await.is_err(), "told once");
}

/// `[sink] publish = "https://…"` instead of a table (`type = "none"`): each write's records
/// are POSTed as one document, every written record once (no fault here), rejects not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_posted_to_a_webhook_instead_of_a_table() {
    let (hook, mut posted) = webhook().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("items.csv");
    let rows: String = (0..50).map(|i| format!("{i},n{i}\n")).collect();
    std::fs::write(&input, format!("id,name\n{rows}bad,\n")).unwrap();
    let job = format!(
        "[[columns]]\nname = \"id\"\ntype = \"integer\"\nrequired = true\n[[columns]]\nname = \"name\"\nrequired = true\n\
         [key]\nfields = [\"id\"]\n[sink]\ntype = \"none\"\nbatch = 20\npublish = {hook:?}\n"
    );
    let summary = run(&dir.path().join("data"), std::slice::from_ref(&input), &job, dir.path()).await.unwrap();
    assert_eq!((summary.records.written, summary.records.rejected), (50, 1));
    let mut keys = std::collections::BTreeMap::new();
    let mut posts = 0;
    while let Ok(Some(doc)) = tokio::time::timeout(Duration::from_millis(500), posted.recv()).await {
        posts += 1;
        for r in doc["records"].as_array().unwrap() {
            let key = r["key"].as_str().unwrap().to_string();
            assert!(keys.insert(key, r["record"].clone()).is_none(), "posted twice: {r}");
        }
    }
    assert_eq!(keys.len(), 50, "every written record");
    assert!(posts >= 3, "{posts} posts for 50 records in writes of 20");
    assert_eq!(keys["42"], serde_json::json!({"id": 42, "name": "n42"}));
}

/// A hook that answers 307 names another address: sluicebox follows no redirect, so the job's
/// JSON reaches only the hook it was given (the second listener hears nothing), and the
/// notification counts as not delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_redirect_is_not_followed() {
    let (elsewhere, mut stolen) = webhook().await;
    let redirect: &'static str =
        Box::leak(format!("HTTP/1.1 307 Temporary Redirect\r\nlocation: {elsewhere}\r\n").into_boxed_str());
    let (hook, mut posted) = webhook_answering(redirect).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("items.csv");
    std::fs::write(&input, "id,name\n1,a\n2,b\n").unwrap();
    let job =
        format!("[[columns]]\nname = \"id\"\ntype = \"integer\"\n[sink]\ntype = \"none\"\n[[notify]]\nto = {hook:?}\n");
    let summary = run(&dir.path().join("data"), std::slice::from_ref(&input), &job, dir.path()).await.unwrap();
    assert_eq!(summary.records.written, 2);
    assert!(tokio::time::timeout(Duration::from_secs(5), posted.recv()).await.unwrap().is_some(), "the hook was told");
    assert!(
        tokio::time::timeout(Duration::from_secs(2), stolen.recv()).await.is_err(),
        "the redirect was followed: the job's JSON went to the address the hook named"
    );
}

/// Without SLUICEBOX_ALLOW_PRIVATE_ENDPOINTS, a webhook on loopback, a private or link-local
/// address (the cloud metadata address) or over plain http is refused with the key named,
/// before anything is sent; a name that resolves to loopback is refused when it is called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_to_internal_addresses_are_refused_unless_allowed() {
    assert!(std::env::var(sluicebox::model::web::ALLOW_PRIVATE).is_err(), "this test runs without the allowance");
    let parse = |to: &str| {
        let config = format!("[[notify]]\nto = {to:?}\n");
        sluicebox::model::config::JobConfig::from_toml(&config, "job.toml")
            .and_then(|c| c.resolve(Path::new(".")))
            .and_then(|d| d.check())
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    for to in [
        "https://169.254.169.254/latest/meta-data/iam/security-credentials/role",
        "https://127.0.0.1:8080/hook",
        "https://10.0.0.7/hook",
        "https://[::1]/hook",
        "https://[::ffff:169.254.169.254]/x",
        "http://hooks.example.com/services/T0/B0/SECRET",
    ] {
        let err = parse(to).unwrap_err();
        assert!(err.contains("notify[0].to"), "{to}: {err}");
        assert!(
            !err.contains("SECRET") && !err.contains("security-credentials"),
            "{to}: the error shows the path: {err}"
        );
    }
    parse("https://hooks.example.com/services/T0/B0/SECRET").unwrap();

    // A name that resolves to loopback: refused at the call, and no connection reaches the
    // listener there.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = sluicebox::model::web::client(Duration::from_secs(5)).unwrap();
    let url = sluicebox::model::web::SecretUrl::new(format!("https://localhost:{port}/hook/SECRET"));
    let err =
        sluicebox::model::web::post_json(&client, &url, "notify.to", b"{}".to_vec()).await.unwrap_err().to_string();
    assert!(err.contains("internal address") && !err.contains("SECRET"), "{err}");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), listener.accept()).await.is_err(),
        "a connection reached loopback"
    );
}

/// Every secret a user configured (a webhook's path and token, a publish URL's path, the SMTP
/// server's password) stays out of every artefact of a succeeded and of a failed job and out
/// of the process's log at debug level, whether the sends succeed or fail. (The stored job
/// definition, `job.json`, is the job file itself, which workers elsewhere read.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_secrets_reach_no_log_page_summary_or_message() {
    const SECRETS: [&str; 5] = ["HOOKSECRET", "TOKENSECRET", "PUBLISHSECRET", "SMTPPASSWORD", "REFUSEDSECRET"];
    let (hook, mut posted) = webhook().await;
    let (refusing, _) = webhook_answering("HTTP/1.1 400 Bad Request\r\n").await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("items.csv");
    std::fs::write(&input, "id,name\n1,a\n2,b\nx,c\n").unwrap();
    let job = |publish: &str| {
        format!(
            "[[columns]]\nname = \"id\"\ntype = \"integer\"\n[key]\nfields = [\"id\"]\n\
             [sink]\ntype = \"none\"\npublish = \"{publish}\"\n\
             [[notify]]\nto = \"{hook}/HOOKSECRET?token=TOKENSECRET\"\non = [\"succeeded\", \"completed_with_rejects\", \"failed\"]\n\
             [[notify]]\nto = \"smtp://ops@example.com\"\nfrom = \"jobs@example.com\"\non = [\"completed_with_rejects\", \"failed\"]\n"
        )
    };
    let data = dir.path().join("data");
    let mut stderr = String::new();
    for (name, publish, ok) in
        [("good", format!("{hook}/p/PUBLISHSECRET"), true), ("bad", format!("{refusing}/p/REFUSEDSECRET"), false)]
    {
        let job_file = dir.path().join(format!("{name}.toml"));
        std::fs::write(&job_file, job(&publish)).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluicebox"))
            .args(["run", input.to_str().unwrap(), "--config", job_file.to_str().unwrap(), "--data-dir"])
            .arg(&data)
            .args(["--job-id", name])
            .env("RUST_LOG", "debug")
            .env(sluicebox::model::web::ALLOW_PRIVATE, "true")
            // A closed port: every e-mail fails, and the failure is logged.
            .env("SLUICEBOX_SMTP_URL", "smtp://user:SMTPPASSWORD@127.0.0.1:1")
            .output()
            .unwrap();
        assert_eq!(out.status.success(), ok, "{name}: {}", String::from_utf8_lossy(&out.stderr));
        stderr.push_str(&String::from_utf8_lossy(&out.stderr));
        stderr.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    assert!(tokio::time::timeout(Duration::from_secs(5), posted.recv()).await.unwrap().is_some(), "the hook was told");
    assert!(
        stderr.contains("cannot notify") && stderr.contains("smtp://127.0.0.1:1"),
        "the failed e-mail is logged: {stderr}"
    );
    for secret in SECRETS {
        assert!(!stderr.contains(secret), "{secret} in the log:\n{stderr}");
    }
    // Every file of both jobs (the bucket, the ledger and the sink database) but the stored
    // definition, which is the job file itself and what workers elsewhere read it from.
    let mut files = Vec::new();
    let mut dirs = vec![data.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            match e.file_type().unwrap().is_dir() {
                true => dirs.push(e.path()),
                false => files.push(e.path()),
            }
        }
    }
    let jobs = data.join("bucket/jobs");
    for job in ["good", "bad"] {
        assert!(jobs.join(job).is_dir(), "{job}");
    }
    assert!(files.iter().any(|f| f.ends_with("good/report.html")), "{files:?}");
    // A local run stops at the refused publish (and can be resumed): its error names the hook.
    let shown = format!("{}/…: answered 400", refusing.trim_end_matches("/hook"));
    assert!(stderr.contains(&shown), "{shown} not in {stderr}");
    for file in files.iter().filter(|f| !f.ends_with("job.json")) {
        let bytes = std::fs::read(file).unwrap();
        for secret in SECRETS {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "{secret} in {}", file.display());
        }
    }
}

/// Seed 002 as its users run it: 2,000 copies of its `example1.json` (one pretty-printed
/// object each, as `cp example1.json exampleN.json` makes them) under one directory, and two
/// more whose price is not a number. One job, every object a record with the seed's added
/// field, the small files packed into at most 10 chunks, the rejects naming their own file
/// and line, and one notification well under SNS's 256 KB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_small_json_files_are_one_job_of_few_chunks_told_in_one_short_message() {
    let (hook, mut posted) = webhook().await;
    let seed_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/seed-data/s3-high-throughput-distributed-map/example1.json");
    let seed = std::fs::read_to_string(&seed_path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("assets");
    std::fs::create_dir_all(&inputs).unwrap();
    for i in 1..=2000 {
        std::fs::copy(&seed_path, inputs.join(format!("example{i}.json"))).unwrap();
    }
    let bad = seed.replace("\"price\": 1.45", "\"price\": \"one forty-five\"");
    assert_ne!(bad, seed);
    for name in ["example1500b.json", "example77b.json"] {
        std::fs::write(inputs.join(name), &bad).unwrap();
    }
    let job = format!(
        "transform = ['.product.priceWithTax = .product.price * 1.2 | .product.processed = true']\n\
         [input]\nformat = \"json\"\n[output]\nformat = \"jsonl\"\n[sink]\ntype = \"none\"\n\
         [[notify]]\nto = {hook:?}\n"
    );
    let data = dir.path().join("data");
    let s = run(&data, std::slice::from_ref(&inputs), &job, dir.path()).await.unwrap();
    assert_eq!(s.inputs.len(), 2002);
    assert_eq!((s.records.total, s.records.written, s.records.rejected), (2002, 2000, 2), "{:?}", s.rejects_by_rule);
    assert!(s.chunks.total <= 10, "{} chunks for 2,002 small files", s.chunks.total);
    assert!(s.inputs.iter().all(|i| i.records == 1), "every file is one record");

    let output = job_file(&data, &s.job_id, "output.jsonl");
    assert_eq!(output.lines().count(), 2000);
    for line in output.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["product"]["processed"], serde_json::json!(true), "{v}");
        assert_eq!(v["product"]["name"], "Product One");
    }
    let mut rejected: Vec<(String, u64, String)> = rejects(&data, &s.job_id)
        .iter()
        .map(|r| {
            (r["input"].as_str().unwrap().to_string(), r["line"].as_u64().unwrap(), r["rule"].as_str().unwrap().into())
        })
        .collect();
    rejected.sort();
    let located: Vec<(bool, u64, &str)> =
        rejected.iter().map(|(input, line, rule)| (input.ends_with("b.json"), *line, rule.as_str())).collect();
    assert_eq!(located, [(true, 1, "transform"), (true, 1, "transform")], "{rejected:?}");
    assert!(rejected[0].0.ends_with("example1500b.json") && rejected[1].0.ends_with("example77b.json"), "{rejected:?}");

    let told =
        tokio::time::timeout(Duration::from_secs(10), posted.recv()).await.expect("the webhook was called").unwrap();
    let size = serde_json::to_vec(&told).unwrap().len();
    assert!(size < 16 * 1024, "the message is {size} bytes");
    assert_eq!(told["inputs_total"], 2002, "{told}");
    assert!(told["links"]["manifest"].is_string(), "{told}");
}
