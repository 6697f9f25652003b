//! Every command of README.md and examples/*/README.md, run as written. A README's ```sh blocks
//! run in order, each as one bash script, in a scratch directory laid out like the repository
//! (its `examples/` copied there, so the examples' commands can change what they like), with
//! `sluicebox` on the path as the binary cargo built for the tests. A block with a comment
//! naming `--features aws` (the aws build) runs against the moto emulator `scripts/test`
//! starts, and only such a block may reach AWS. Every command must exit 0, a command put in the
//! background with `&` included (it is stopped with SIGTERM at the end of its block); where the
//! README states an outcome ([`OUTCOMES`]), the command prints it. Commands a test cannot run
//! are in [`NOT_RUN`] with the reason. ```text blocks are outputs and are not run.
//!
//! The walk-throughs name their buckets, queues and tables as a user would, so they need an
//! emulator they have not run on before (`scripts/test` and `scripts/moto` start a fresh one).
#![cfg(feature = "aws")]

use crate::common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Commands that cannot run in a test (matched by how they start), and why.
const NOT_RUN: &[(&str, &str)] = &[
    ("scripts/test", "runs every check and the whole test suite, this test included"),
    (
        "cargo install --path . --locked",
        "installs into ~/.cargo/bin; here the binary cargo built for the tests is `sluicebox` on the path",
    ),
    (
        "pip install cargo-lambda",
        "builds the Lambda functions with cargo-lambda and Zig; tests/it/lambda.rs calls their handlers",
    ),
    ("sam deploy", "deploys the stack to an AWS account; scripts/test checks its template (cfn-lint, check_iam.py)"),
    ("aws s3 cp job.toml s3://BUCKET/", "needs a deployed stack's bucket; tests/it/lambda.rs sends its events"),
    ("aws s3 cp orders.csv s3://BUCKET/", "needs a deployed stack's bucket; tests/it/lambda.rs sends its events"),
    ("aws s3 cp s3://BUCKET/", "needs a deployed stack's bucket; tests/it/lambda.rs reads a job's summary"),
];

/// What a command prints that its README states: (README, how the command starts, what its
/// output holds).
const OUTCOMES: &[(&str, &str, &[&str])] = &[
    ("README.md", "sluicebox run examples/orders/orders.csv", &["10000 records: 10000 written, 0 rejected"]),
    ("README.md", "sluicebox run my.csv", &["table my"]),
    ("README.md", "sluicebox stream --from trips.csv", &["20,000 written", "5 files"]),
    ("README.md", "sluicebox run s3://my-bucket/incoming/orders.csv", &["10000 written"]),
    ("README.md", "sluicebox produce examples/orders/orders.csv", &["put 10000 records"]),
    ("examples/orders/README.md", "sluicebox test", &["4 passed"]),
    ("examples/orders/README.md", "sluicebox run examples/orders/orders.csv", &["10000 written, 0 rejected"]),
    ("examples/orders/README.md", "sluicebox status", &["complete", "10/10"]),
    ("examples/orders/README.md", "sluicebox run inbox/orders.csv", &["10000 written"]),
    ("examples/scatter-gather/README.md", "sluicebox run examples/", &["998 written, 2 rejected"]),
    ("examples/scatter-gather/README.md", "sluicebox status", &["complete", "10/10"]),
    ("examples/scatter-gather/README.md", "sluicebox run s3://", &["998 written, 2 rejected"]),
    ("examples/scatter-gather/README.md", "aws dynamodb scan", &["\"Count\": 998"]),
    ("examples/distributed-map/README.md", "sluicebox run products/", &["2000 written, 0 rejected", "(8 chunks"]),
    ("examples/distributed-map/README.md", "sluicebox watch", &["started job"]),
    ("examples/distributed-map/README.md", "sluicebox status", &["complete", "1/1"]),
    ("examples/taxi-stream/README.md", "sluicebox stream --from trips.csv", &["20,000 written", "5 files"]),
    ("examples/taxi-stream/README.md", "sluicebox produce", &["put 20000 records"]),
    ("examples/taxi-stream/README.md", "sluicebox stream --from kinesis://", &["20,000 written", "5 files"]),
    ("examples/queue-to-table/README.md", "sluicebox stream --from statements.csv", &["23,300 records upserted"]),
    ("examples/queue-to-table/README.md", "sh examples/queue-to-table/statements.sh 500", &["500 records upserted"]),
    ("examples/queue-to-table/README.md", "sluicebox produce", &["put 500 records"]),
    ("examples/queue-to-table/README.md", "sluicebox stream --from sqs://", &["records upserted into statements"]),
    ("examples/queue-to-table/README.md", "aws dynamodb scan", &["\"Count\": 495"]),
];

/// How the README's first lines run the binary; the test runs the one cargo built for it.
const CARGO_RUN: &str = "cargo run --release -- ";

/// The READMEs whose commands are run, each by its own test below.
const READMES: &[&str] = &[
    "README.md",
    "examples/distributed-map/README.md",
    "examples/orders/README.md",
    "examples/scatter-gather/README.md",
    "examples/taxi-stream/README.md",
    "examples/queue-to-table/README.md",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One command of a ```sh block: its first line's number, and its text (continued lines and
/// all).
#[derive(Debug, Clone)]
struct Cmd {
    line: usize,
    text: String,
}

impl Cmd {
    /// The command as it runs: `cargo run --release --` is the binary cargo built.
    fn as_run(&self) -> String {
        self.text.replace(CARGO_RUN, "sluicebox ")
    }

    /// The command as it runs, on one line, as the tables above match it.
    fn flat(&self) -> String {
        self.as_run().replace("\\\n", " ").split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Why a test cannot run it, if it is listed.
    fn not_run(&self) -> Option<&'static str> {
        let flat = self.flat();
        NOT_RUN.iter().find(|(start, _)| flat.starts_with(start)).map(|(_, why)| *why)
    }

    /// Whether it is put in the background (`&` at its end, before a comment).
    fn background(&self) -> bool {
        let flat = self.flat();
        let code = flat.split(" # ").next().unwrap_or_default();
        code.trim_end().ends_with('&') && !code.trim_end().ends_with("&&")
    }

    /// Whether it reaches AWS: the AWS CLI, or a URL of an AWS service (but `ddl`, which only
    /// prints the table over a location it names).
    fn reaches_aws(&self) -> bool {
        let flat = self.flat();
        let urls = ["s3://", "sqs://", "dynamodb://", "kinesis://", "sns://", "ses://"];
        flat.starts_with("aws ") || (!flat.starts_with("sluicebox ddl ") && urls.iter().any(|u| flat.contains(u)))
    }
}

/// A ```sh block: where it starts, whether it says it needs the aws build, its commands.
#[derive(Debug)]
struct Block {
    line: usize,
    aws: bool,
    cmds: Vec<Cmd>,
}

/// The ```sh blocks of a README's text.
fn sh_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((n, l)) = lines.next() {
        if l.trim_end() != "```sh" {
            continue;
        }
        let mut block = Block { line: n, aws: false, cmds: Vec::new() };
        let mut open: Option<Cmd> = None;
        for (n, l) in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            if let Some(mut cmd) = open.take() {
                cmd.text = format!("{}\n{l}", cmd.text);
                if l.ends_with('\\') {
                    open = Some(cmd);
                } else {
                    block.cmds.push(cmd);
                }
                continue;
            }
            let trimmed = l.trim();
            if trimmed.starts_with('#') {
                block.aws |= trimmed.contains("--features aws");
                continue;
            }
            if trimmed.is_empty() {
                continue;
            }
            let cmd = Cmd { line: n, text: l.to_string() };
            if l.ends_with('\\') {
                open = Some(cmd);
            } else {
                block.cmds.push(cmd);
            }
        }
        blocks.push(block);
    }
    blocks
}

/// The bash script that runs `cmds` in order, each one's output in `out/N.out` and `N.err`
/// and its exit status appended to `out/status` (`N STATUS`), stopping at the first that
/// fails. A command put in the background runs in a subshell that appends its status when it
/// ends (the README may `wait` for it itself); one still running at the end is stopped with
/// SIGTERM.
fn script(cmds: &[(usize, &Cmd)], out: &Path) -> String {
    let out = out.display();
    let mut s = String::from("set -o pipefail\ntrap 'kill $(jobs -p) 2>/dev/null' EXIT\n");
    for (i, cmd) in cmds {
        if cmd.background() {
            let run = cmd.as_run();
            let code = run.split(" # ").next().unwrap_or_default().trim_end();
            let code = code.strip_suffix('&').unwrap_or(code);
            let _ = writeln!(
                s,
                "( {code} &\n  echo $! >'{out}/{i}.pid'; wait $!; echo \"{i} $?\" >>'{out}/status' ) >'{out}/{i}.out' 2>'{out}/{i}.err' &\nbg_{i}=$!"
            );
        } else {
            let _ = writeln!(s, "{{ {}\n}} >'{out}/{i}.out' 2>'{out}/{i}.err'", cmd.as_run());
            let _ = writeln!(s, "s=$?; echo \"{i} $s\" >>'{out}/status'; [ $s -eq 0 ] || exit 1");
        }
    }
    for (i, _) in cmds.iter().filter(|(_, c)| c.background()) {
        let _ = writeln!(s, "kill -TERM $(cat '{out}/{i}.pid') 2>/dev/null; wait $bg_{i} 2>/dev/null");
    }
    s
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Run every command of `readme` as the module's doc says, and check the outcomes it states.
fn run_readme(readme: &str) {
    let text = std::fs::read_to_string(repo().join(readme)).unwrap();
    let blocks = sh_blocks(&text);
    assert!(!blocks.is_empty(), "{readme} has no ```sh block");
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("repo");
    copy_dir(&repo().join("examples"), &root.join("examples"));
    let bin = scratch.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // A hard link keeps the binary this test started with, should a build replace the file.
    let exe = Path::new(env!("CARGO_BIN_EXE_sluicebox"));
    if std::fs::hard_link(exe, bin.join("sluicebox")).is_err() {
        std::os::unix::fs::symlink(exe, bin.join("sluicebox")).unwrap();
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());

    for block in &blocks {
        for cmd in block.cmds.iter().filter(|c| c.not_run().is_none()) {
            assert!(
                block.aws || !cmd.reaches_aws(),
                "{readme} line {}: `{}` reaches AWS, but its block (line {}) does not say that it needs the aws \
                 build (a comment naming --features aws)",
                cmd.line,
                cmd.flat(),
                block.line
            );
        }
    }

    let buckets: std::collections::BTreeSet<&str> = blocks
        .iter()
        .filter(|b| b.aws)
        .flat_map(|b| b.cmds.iter().filter(|c| c.not_run().is_none()))
        .flat_map(|c| c.text.split("s3://").skip(1))
        .map(|rest| rest.split(|c: char| c == '/' || c == '"' || c == '\'' || c.is_whitespace()).next().unwrap_or(rest))
        .collect();
    if !buckets.is_empty() {
        assert_fresh(readme, &buckets);
    }

    let mut ran: Vec<(Cmd, PathBuf)> = Vec::new();
    for (b, block) in blocks.iter().enumerate() {
        let cmds: Vec<(usize, &Cmd)> = block.cmds.iter().filter(|c| c.not_run().is_none()).enumerate().collect();
        if cmds.is_empty() {
            continue;
        }
        if block.aws {
            common::assert_emulator();
            if cmds.iter().any(|(_, c)| c.flat().starts_with("aws ")) {
                let cli = Command::new("aws").arg("--version").output();
                assert!(cli.is_ok_and(|o| o.status.success()), "{readme} line {}: needs the AWS CLI", block.line);
            }
        }
        let out = scratch.path().join(format!("out-{b}"));
        std::fs::create_dir_all(&out).unwrap();
        let status = Command::new("bash")
            .arg("-c")
            .arg(script(&cmds, &out))
            .current_dir(&root)
            .env("PATH", &path)
            .status()
            .unwrap();
        let statuses = std::fs::read_to_string(out.join("status")).unwrap_or_default();
        for (i, cmd) in &cmds {
            let said = |ext: &str| std::fs::read_to_string(out.join(format!("{i}.{ext}"))).unwrap_or_default();
            let exit = statuses.lines().find_map(|l| l.strip_prefix(&format!("{i} ")));
            assert!(
                exit == Some("0"),
                "{readme} line {}: `{}` exited {exit:?} (block status {status})\n--- stdout\n{}\n--- stderr\n{}",
                cmd.line,
                cmd.flat(),
                said("out"),
                said("err")
            );
            ran.push(((*cmd).clone(), out.join(format!("{i}.out"))));
        }
    }

    for (_, start, expected) in OUTCOMES.iter().filter(|(r, _, _)| *r == readme) {
        let (cmd, out) = ran
            .iter()
            .find(|(c, _)| c.flat().starts_with(start))
            .unwrap_or_else(|| panic!("{readme}: no command runs that starts with `{start}`"));
        let printed = std::fs::read_to_string(out).unwrap();
        for e in *expected {
            assert!(text.contains(e), "{readme} does not state `{e}`");
            assert!(
                printed.contains(e),
                "{readme} line {}: `{}` did not print `{e}`:\n{printed}",
                cmd.line,
                cmd.flat()
            );
        }
    }
}

/// Panics if one of `buckets` exists: the README's walk-through ran on this emulator before,
/// and its jobs would be found done instead of run.
fn assert_fresh(readme: &str, buckets: &std::collections::BTreeSet<&str>) {
    common::assert_emulator();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let s3 = sluicebox::backends::aws::s3(&common::emulator().await);
        for bucket in buckets {
            assert!(
                s3.head_bucket().bucket(*bucket).send().await.is_err(),
                "{readme}: s3://{bucket} exists: its AWS walk-through ran on this emulator before; start a \
                 fresh one (scripts/test and scripts/moto do)"
            );
        }
    });
}

#[test]
fn the_readme_runs_as_written() {
    run_readme("README.md");
}

#[test]
fn the_orders_example_runs_as_written() {
    run_readme("examples/orders/README.md");
}

#[test]
fn the_scatter_gather_example_runs_as_written() {
    run_readme("examples/scatter-gather/README.md");
}

#[test]
fn the_distributed_map_example_runs_as_written() {
    run_readme("examples/distributed-map/README.md");
}

#[test]
fn the_taxi_stream_example_runs_as_written() {
    run_readme("examples/taxi-stream/README.md");
}

#[test]
fn the_queue_to_table_example_runs_as_written() {
    run_readme("examples/queue-to-table/README.md");
}

/// Each README with a command has its test above; each command not run is in a README; each
/// file or directory a README's commands name under `examples/` ships.
#[test]
fn every_readme_is_run_and_every_exception_is_used() {
    let mut found = vec!["README.md".to_string()];
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let readme = entry.unwrap().path().join("README.md");
        if readme.exists() {
            found.push(readme.strip_prefix(repo()).unwrap().display().to_string());
        }
    }
    found.sort();
    let mut listed: Vec<String> = READMES.iter().map(|r| r.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "each README has a test of its commands in tests/it/readme.rs");

    let cmds: Vec<Cmd> = READMES
        .iter()
        .flat_map(|r| sh_blocks(&std::fs::read_to_string(repo().join(r)).unwrap()))
        .flat_map(|b| b.cmds)
        .collect();
    for (start, _) in NOT_RUN {
        assert!(cmds.iter().any(|c| c.flat().starts_with(start)), "no README command starts with `{start}`");
    }
    for cmd in &cmds {
        for word in cmd.flat().split_whitespace() {
            let word = word.trim_matches(|c| c == '"' || c == '\'');
            if let Some(path) = word.strip_prefix("examples/").filter(|p| !p.contains('*')) {
                assert!(
                    repo().join("examples").join(path).exists(),
                    "line {}: examples/{path} does not ship",
                    cmd.line
                );
            }
        }
    }
}

#[test]
fn commands_are_read_from_sh_blocks_with_their_continuations() {
    let text = "x\n```sh\n# with the aws build (--features aws)\na \\\n  b   # c\nd &   # e\n```\n```text\nf\n```\n";
    let blocks = sh_blocks(text);
    assert_eq!(blocks.len(), 1);
    assert!(blocks[0].aws);
    let flat: Vec<(usize, String, bool)> = blocks[0].cmds.iter().map(|c| (c.line, c.flat(), c.background())).collect();
    assert_eq!(flat, [(4, "a b # c".to_string(), false), (6, "d & # e".to_string(), true)]);
}
