//! Spark (PyPI `pyspark`, local mode on the machine's Java 17) writing Parquet into a writable dataset (issue 3):
//! `df.write.parquet(dir)`, `mode("overwrite")` and `partitionBy` into `<mnt>/datasets/spark/`, then
//! `spark.read.parquet(dir)` must give back the same rows as the same DataFrame written to a local directory. Every
//! write must commit a new version (the dataset's `user.ipfs.cid` changes), the version a write committed must be
//! readable by Spark under `/ipfs/<root>` after it was overwritten, and listings must show only the user's files
//! (part files and `_SUCCESS`, no `_temporary`).
//!
//! Spark only talks to loopback: `SPARK_LOCAL_IP`, `spark.driver.host` and `spark.driver.bindAddress` are
//! 127.0.0.1 and the UI is off. The test skips (with a printed reason) when java or pyspark is missing, and fails
//! instead under `IPFS_MOUNT_REQUIRE_PEERS=1` (CI, whose `.ci/run` installs pyspark).

mod common;

use common::*;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TEST: &str = "spark_parquet_into_a_dataset";

/// The Spark job. argv: <dataset dir> <local dir> <mountpoint>. It writes the same DataFrames under both dirs,
/// reads them back, and prints one `RESULT <json>` line per step; any mismatch found inside Spark is listed under
/// "problems". Only built-in expressions (no Python UDFs), so no Python workers are started.
const SPARK_SCRIPT: &str = r#"
import json, os, sys, time
os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
from pyspark.sql import SparkSession, functions as F

ds, local, mnt = sys.argv[1], sys.argv[2], sys.argv[3]
spark = (SparkSession.builder.master("local[2]").appName("ipfs-mount-datasets-spark")
         .config("spark.driver.host", "127.0.0.1")
         .config("spark.driver.bindAddress", "127.0.0.1")
         .config("spark.ui.enabled", "false")
         .config("spark.sql.shuffle.partitions", "4")
         .getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
problems = []

def cid():
    return os.getxattr(ds, "user.ipfs.cid").decode().rstrip("\0\n")

def make(n, salt):
    # ~n rows: a long, two strings (one with non-ASCII), a small-cardinality group, a double, a nullable int.
    return (spark.range(0, n, 1, 2)
            .withColumn("name", F.concat(F.lit(f"row-{salt}-"), F.col("id").cast("string")))
            .withColumn("label", F.concat(F.lit("é✓-"), (F.col("id") % 101).cast("string")))
            .withColumn("grp", F.concat(F.lit("g"), (F.col("id") % 7).cast("string")))
            .withColumn("value", F.col("id") * 1.5 + salt)
            .withColumn("maybe", F.when(F.col("id") % 13 == 0, F.lit(None)).otherwise((F.col("id") % 1000).cast("int"))))

def stats(df):
    s = df.agg(F.count(F.lit(1)).alias("n"), F.sum("id").alias("sum_id"), F.sum("value").alias("sum_value"),
               F.count("maybe").alias("n_maybe"), F.countDistinct("name").alias("distinct_names")).collect()[0]
    sample = [list(r) for r in df.where(F.col("id") % 997 == 0).orderBy("id")
              .select("id", "name", "label", "grp", "value", "maybe").collect()]
    return {"n": s["n"], "sum_id": s["sum_id"], "sum_value": s["sum_value"], "n_maybe": s["n_maybe"],
            "distinct_names": s["distinct_names"], "sample": sample}

def same_rows(a, b, what):
    cols = ["id", "name", "label", "grp", "value", "maybe"]
    a, b = a.select(*cols), b.select(*cols)
    extra, missing = b.exceptAll(a).count(), a.exceptAll(b).count()
    if extra or missing:
        problems.append(f"{what}: {extra} rows read back that were not written, {missing} written rows missing")

def step(name, fn):
    t = time.time()
    try:
        out = fn()
    except Exception as e:  # report every step, not only the first failure
        out = {"error": f"{type(e).__name__}: {str(e)[:4000]}"}
    out["secs"] = round(time.time() - t, 2)
    out["cid"] = cid()
    print("RESULT " + json.dumps({"step": name, **out}, default=str), flush=True)
    return out

def write_read(path_ds, path_local, df, mode=None, partition=None):
    def w(p):
        wr = df.write
        if mode:
            wr = wr.mode(mode)
        if partition:
            wr = wr.partitionBy(partition)
        wr.parquet(p)
    w(path_local)
    w(path_ds)
    got, want = spark.read.parquet(path_ds), spark.read.parquet(path_local)
    same_rows(df, got, f"read back {path_ds}")
    r = {"ds": stats(got), "local": stats(want), "expected": stats(df)}
    if r["ds"] != r["local"]:
        problems.append(f"{path_ds}: stats differ from the local copy: {r['ds']} vs {r['local']}")
    return r

cid0 = cid()
print("RESULT " + json.dumps({"step": "start", "cid": cid0}), flush=True)
df1, df2 = make(100_000, 0), make(60_000, 7)

s1 = step("write", lambda: write_read(f"{ds}/t", f"{local}/t", df1))
s2 = step("overwrite", lambda: write_read(f"{ds}/t", f"{local}/t", df2, mode="overwrite"))

def old_version():
    # The version the first write committed, read-only under /ipfs, must still hold df1.
    p = f"{mnt}/ipfs/{s1['cid']}/t"
    got = spark.read.parquet(p)
    same_rows(df1, got, f"read back {p}")
    return {"ds": stats(got)}
step("old_version", old_version)

def partitioned():
    r = write_read(f"{ds}/p", f"{local}/p", df1, partition="grp")
    # Partition pruning reads only the grp=g3 directory.
    a = spark.read.parquet(f"{ds}/p").where(F.col("grp") == "g3").agg(F.count(F.lit(1)), F.sum("id")).collect()[0]
    b = df1.where(F.col("grp") == "g3").agg(F.count(F.lit(1)), F.sum("id")).collect()[0]
    if list(a) != list(b):
        problems.append(f"{ds}/p where grp = g3: {list(a)}, expected {list(b)}")
    return r
step("partitioned", partitioned)

def partitioned_overwrite():
    return write_read(f"{ds}/p", f"{local}/p", df2, mode="overwrite", partition="grp")
step("partitioned_overwrite", partitioned_overwrite)

print("RESULT " + json.dumps({"step": "end", "problems": problems}), flush=True)
spark.stop()
"#;

/// Why Spark cannot run here (java or pyspark missing or broken), if it cannot.
fn spark_missing() -> Option<String> {
    if which("java").is_none() {
        return Some("java not found on PATH (pyspark needs Java 17+)".into());
    }
    let out = run(Command::new("java").arg("-version"));
    if !out.status.success() {
        return Some(format!(
            "java -version failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let out =
        run(Command::new("python3").args(["-c", "import pyspark; print(pyspark.__version__)"]));
    if !out.status.success() {
        return Some(format!(
            "python3 cannot import pyspark (pip install pyspark): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    eprintln!(
        "pyspark {} on {}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&run(Command::new("java").arg("-version")).stderr)
            .lines()
            .next()
            .unwrap_or("")
    );
    None
}

/// Runs the Spark script; returns its stdout (Err with status, stdout and stderr when it fails or times out).
fn run_spark(ds: &Path, local: &Path, mnt: &Path, secs: u64) -> Result<String, String> {
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(SPARK_SCRIPT)
        .args([ds, local, mnt])
        .stdin(Stdio::null())
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .env("PYSPARK_PYTHON", "python3")
        .env("PYTHONUNBUFFERED", "1");
    for k in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
        "SPARK_HOME",
        "PYSPARK_SUBMIT_ARGS",
    ] {
        cmd.env_remove(k);
    }
    // Own process group, so a hung job (python and the JVM it starts) is killed as a whole on timeout.
    cmd.process_group(0);
    let tmp = tempdir("spark-out");
    let (o_path, e_path) = (tmp.path().join("stdout"), tmp.path().join("stderr"));
    cmd.stdout(fs::File::create(&o_path).unwrap())
        .stderr(fs::File::create(&e_path).unwrap());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(st);
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            // SAFETY: kill(2) on the process group this test created (its leader is our child).
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = String::from_utf8_lossy(&fs::read(&o_path).unwrap_or_default()).into_owned();
    let err = String::from_utf8_lossy(&fs::read(&e_path).unwrap_or_default()).into_owned();
    let lines: Vec<&str> = err.lines().collect();
    let err_tail = lines[lines.len().saturating_sub(80)..].join("\n");
    match status {
        Some(st) if st.success() => Ok(stdout),
        Some(st) => Err(format!(
            "the Spark job failed ({st}):\nstdout:\n{stdout}\nstderr (last 80 lines):\n{err_tail}"
        )),
        None => Err(format!(
            "the Spark job timed out after {secs} s (killed):\nstdout:\n{stdout}\nstderr (last 80 lines):\n{err_tail}"
        )),
    }
}

/// Names in a directory, sorted (Err with the errno name).
fn names(dir: &Path) -> Result<Vec<String>, String> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| format!("readdir {}: {e}", dir.display()))? {
        let e = e.map_err(|e| format!("readdir {}: {e}", dir.display()))?;
        v.push(e.file_name().to_string_lossy().into_owned());
    }
    v.sort();
    Ok(v)
}

/// The part files (`part-*.parquet`) directly in `dir`, and whether `_SUCCESS` is there; records a problem for
/// anything a Spark writer leaves behind that is not the user's output (`_temporary`, `.crc` files are Hadoop's and
/// allowed, `_temporary` is not: the job committed).
fn check_output_dir(dir: &Path, failures: &mut Vec<String>) -> Vec<String> {
    match names(dir) {
        Err(e) => {
            failures.push(e);
            Vec::new()
        }
        Ok(ns) => {
            let parts: Vec<String> = ns
                .iter()
                .filter(|n| n.starts_with("part-") && n.ends_with(".parquet"))
                .cloned()
                .collect();
            if parts.is_empty() {
                failures.push(format!(
                    "{}: no part-*.parquet files: {ns:?}",
                    dir.display()
                ));
            }
            if !ns.iter().any(|n| n == "_SUCCESS") {
                failures.push(format!("{}: no _SUCCESS: {ns:?}", dir.display()));
            }
            if ns.iter().any(|n| n == "_temporary") {
                failures.push(format!(
                    "{}: _temporary left behind after the job committed: {ns:?}",
                    dir.display()
                ));
            }
            for p in &parts {
                match fs::metadata(dir.join(p)) {
                    Ok(m) if m.len() > 0 => {}
                    Ok(_) => failures.push(format!("{}/{p}: empty", dir.display())),
                    Err(e) => failures.push(format!("stat {}/{p}: {e}", dir.display())),
                }
            }
            parts
        }
    }
}

#[test]
fn spark_parquet_into_a_dataset() {
    if !require_fuse(TEST) {
        return;
    }
    if let Some(why) = spark_missing() {
        if strict() {
            panic!("{TEST}: {why} (IPFS_MOUNT_REQUIRE_PEERS=1, so this is a failure, not a skip)");
        }
        eprintln!("SKIPPED {TEST}: {why}");
        return;
    }

    let tmp = tempdir("ds-spark");
    let local = tmp.path().join("local");
    fs::create_dir_all(&local).unwrap();

    let m = Mount::start(&["--offline"]);
    let ds = m.mnt.join("datasets").join("spark");
    if let Err(e) = fs::create_dir(&ds) {
        m.fail(&format!("mkdir {}: {e}", ds.display()));
    }
    let cid_empty = getfattr_cid(&ds).unwrap_or_else(|e| m.fail(&e));

    let t0 = Instant::now();
    let out = match run_spark(&ds, &local, &m.mnt, 900) {
        Ok(o) => o,
        Err(e) => m.fail(&e),
    };
    eprintln!("Spark job: {:.1} s", t0.elapsed().as_secs_f64());

    let mut failures: Vec<String> = Vec::new();
    let mut steps: Vec<serde_json::Value> = Vec::new();
    for line in out.lines() {
        if let Some(j) = line.strip_prefix("RESULT ") {
            match serde_json::from_str::<serde_json::Value>(j) {
                Ok(v) => steps.push(v),
                Err(e) => failures.push(format!("bad RESULT line ({e}): {j}")),
            }
        }
    }
    let step = |name: &str| -> serde_json::Value {
        steps
            .iter()
            .find(|s| s["step"] == name)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    };
    for s in &steps {
        let name = s["step"].as_str().unwrap_or("?");
        eprintln!(
            "  {name:<22} {:>7}s  cid {}  rows ds {} local {}",
            s["secs"]
                .as_f64()
                .map(|x| format!("{x:.1}"))
                .unwrap_or("-".into()),
            s["cid"].as_str().unwrap_or("-"),
            s["ds"]["n"],
            s["local"]["n"]
        );
        if let Some(e) = s["error"].as_str() {
            failures.push(format!("Spark step {name}: {e}"));
        }
    }
    if let Some(ps) = step("end")["problems"].as_array() {
        failures.extend(
            ps.iter()
                .map(|p| format!("Spark: {}", p.as_str().unwrap_or(""))),
        );
    } else {
        failures.push(format!(
            "the Spark job printed no final result; stdout:\n{out}"
        ));
    }

    // Row counts the writes must read back.
    for (name, n) in [
        ("write", 100_000),
        ("overwrite", 60_000),
        ("old_version", 100_000),
        ("partitioned", 100_000),
        ("partitioned_overwrite", 60_000),
    ] {
        let got = &step(name)["ds"]["n"];
        if got.as_u64() != Some(n) {
            failures.push(format!("{name}: read back {got} rows, wrote {n}"));
        }
    }

    // Every write commits a new version.
    let cids: Vec<(&str, String)> = [
        "start",
        "write",
        "overwrite",
        "partitioned",
        "partitioned_overwrite",
    ]
    .iter()
    .map(|n| (*n, step(n)["cid"].as_str().unwrap_or("").to_string()))
    .collect();
    if cids[0].1 != cid_empty {
        failures.push(format!(
            "dataset CID before the job: getfattr {cid_empty}, os.getxattr in Spark's process {}",
            cids[0].1
        ));
    }
    for w in cids.windows(2) {
        if w[0].1.is_empty() || w[0].1 == w[1].1 {
            failures.push(format!(
                "dataset CID did not change with step {}: {} -> {}",
                w[1].0, w[0].1, w[1].1
            ));
        }
    }
    let root = getfattr_cid(&ds).unwrap_or_else(|e| m.fail(&e));
    if root != cids[4].1 {
        failures.push(format!(
            "getfattr after the job: {root}, Spark saw {} after its last write",
            cids[4].1
        ));
    }

    // The dataset and its committed version under /ipfs list the user's files only.
    for base in [ds.clone(), m.ipfs(&root)] {
        match names(&base) {
            Ok(ns) if ns == ["p", "t"] => {}
            Ok(ns) => failures.push(format!(
                "{}: {ns:?}, expected [\"p\", \"t\"]",
                base.display()
            )),
            Err(e) => failures.push(e),
        }
        let parts = check_output_dir(&base.join("t"), &mut failures);
        eprintln!(
            "{}/t: {} part files; listing {:?}; p: {:?}",
            base.display(),
            parts.len(),
            names(&base.join("t")).unwrap_or_default(),
            names(&base.join("p")).unwrap_or_default()
        );
        match names(&base.join("p")) {
            Ok(ns) => {
                let groups: Vec<&String> = ns.iter().filter(|n| n.starts_with("grp=")).collect();
                if groups.len() != 7 {
                    failures.push(format!(
                        "{}/p: {ns:?}, expected grp=g0 .. grp=g6",
                        base.display()
                    ));
                }
                for g in groups {
                    let gd = base.join("p").join(g);
                    match names(&gd) {
                        Ok(fs)
                            if fs
                                .iter()
                                .any(|f| f.starts_with("part-") && f.ends_with(".parquet")) => {}
                        Ok(fs) => failures.push(format!("{}: no part files: {fs:?}", gd.display())),
                        Err(e) => failures.push(e),
                    }
                }
                if !ns.iter().any(|n| n == "_SUCCESS") {
                    failures.push(format!("{}/p: no _SUCCESS: {ns:?}", base.display()));
                }
                if ns.iter().any(|n| n == "_temporary") {
                    failures.push(format!(
                        "{}/p: _temporary left behind: {ns:?}",
                        base.display()
                    ));
                }
            }
            Err(e) => failures.push(e),
        }
    }

    // Part files in the dataset and in its version are the same bytes (and each has a CID).
    if let Ok(ns) = names(&ds.join("t")) {
        for n in ns.iter().filter(|n| n.starts_with("part-")) {
            let a = ds.join("t").join(n);
            let b = m.ipfs(&root).join("t").join(n);
            match (fs::read(&a), fs::read(&b)) {
                (Ok(x), Ok(y)) if x == y => {}
                (Ok(x), Ok(y)) => failures.push(format!(
                    "{n}: {} bytes in the dataset, {} bytes under /ipfs/{root}/t, contents differ",
                    x.len(),
                    y.len()
                )),
                (a, b) => failures.push(format!(
                    "read {n}: dataset {:?}, /ipfs {:?}",
                    a.err(),
                    b.err()
                )),
            }
            if let Err(e) = getfattr_cid(&a) {
                failures.push(e);
            }
        }
    }

    if !failures.is_empty() {
        m.fail(&format!(
            "{TEST}: {} problem(s):\n- {}",
            failures.len(),
            failures.join("\n- ")
        ));
    }
}
