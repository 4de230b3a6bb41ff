//! Swap benchmark: prints numbers, asserts nothing.
//!
//! `cargo run --release -p banalytics-home --example swap_bench`
//!
//! Apply time of a 2 GiB set (8 files of 256 MiB, sparse: a swap moves
//! folders, it never reads file contents) and of a 50-module set (each with
//! a main artifact, two dependency files and a model file), alternating
//! apply and rollback so every run swaps real folders; and the recovery
//! time after a process was killed in the middle of a swap (a child
//! process dies at the point of no return, the parent times `recover`).

#![allow(unused_crate_dependencies)] // the lint checks libraries; this target sees every dependency of its package

use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    time::{Duration, Instant},
};

use banalytics_home::{
    layout::Layout,
    record::{FileRecord, ModuleRecord, PackageRecord, SetRecord},
    swap,
};

fn write_set(
    modules: &Path,
    models: &Path,
    tag: &str,
    modules_n: usize,
    file_size: u64,
    files_per: usize,
) {
    fs::create_dir_all(modules.join("lib")).unwrap();
    fs::create_dir_all(models).unwrap();
    let mut record = SetRecord {
        format: SetRecord::FORMAT,
        modules: BTreeMap::new(),
    };
    let mut info = String::new();
    let mk = |dir: &Path, name: &str| {
        let f = fs::File::create(dir.join(name)).unwrap();
        f.set_len(file_size).unwrap();
        FileRecord {
            name: name.to_owned(),
            sha256: banalytics_home::Sha256::from_bytes([0; 32]),
            size: file_size,
        }
    };
    for i in 0..modules_n {
        let main = mk(modules, &format!("com.example-m{i}-{tag}.jar"));
        let deps: Vec<_> = (1..files_per)
            .map(|j| mk(modules, &format!("lib/m{i}-{tag}-{j}.jar")))
            .collect();
        let model_dir = models.join(format!("m{i}"));
        fs::create_dir_all(&model_dir).unwrap();
        let model = mk(models, &format!("m{i}/model-{tag}.bin"));
        record.modules.insert(
            format!("com.example:m{i}:{tag}").parse().unwrap(),
            ModuleRecord {
                main,
                dependencies: (!deps.is_empty()).then(|| PackageRecord {
                    sha256: banalytics_home::Sha256::from_bytes([0; 32]),
                    size: 1,
                    files: deps,
                }),
                model: Some(PackageRecord {
                    sha256: banalytics_home::Sha256::from_bytes([0; 32]),
                    size: 1,
                    files: vec![model],
                }),
            },
        );
        info.push_str(&format!(
            "com.example\\:m{i}\\:{tag}=component\\:1772360130\n"
        ));
    }
    record.write(modules).unwrap();
    fs::write(modules.join("modules-info.properties"), info).unwrap();
}

fn home(modules_n: usize, file_size: u64, files_per: usize) -> (tempfile::TempDir, Layout) {
    let dir = tempfile::Builder::new()
        .prefix("swap-bench-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let layout = Layout::new(dir.path());
    write_set(
        &layout.modules(),
        &layout.models(),
        "1",
        modules_n,
        file_size,
        files_per,
    );
    write_set(
        &layout.upgrade_dir(),
        &layout.models_upgrade(),
        "2",
        modules_n,
        file_size,
        files_per,
    );
    (dir, layout)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench_swaps(name: &str, modules_n: usize, file_size: u64, files_per: usize) {
    let (_dir, layout) = home(modules_n, file_size, files_per);
    let t = Instant::now();
    swap::apply(&layout).unwrap();
    let first = t.elapsed();
    let mut rounds = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        swap::rollback(&layout).unwrap();
        rounds.push(t.elapsed());
    }
    println!(
        "{name:<34} apply {:>7.2} ms   swap (rollback) median of 20 {:>7.2} ms",
        first.as_secs_f64() * 1e3,
        median(rounds).as_secs_f64() * 1e3
    );
}

fn main() {
    if let Ok(dir) = std::env::var("SWAP_BENCH_CHILD") {
        // The child: apply, and die at the point of no return.
        swap::apply(&Layout::new(Path::new(&dir))).unwrap();
        unreachable!("the failpoint should have killed this process");
    }
    println!("swap benchmark ({})", std::env::temp_dir().display());
    bench_swaps("2 GiB set (8 x 256 MiB)", 8, 256 << 20, 1);
    bench_swaps("50-module set (200 files)", 50, 64 << 10, 3);

    let mut samples = Vec::new();
    for _ in 0..10 {
        let (dir, layout) = home(50, 64 << 10, 3);
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .env("SWAP_BENCH_CHILD", dir.path())
            .env("BANALYTICS_FAILPOINT", "apply.5.modules-in")
            .status()
            .unwrap();
        assert!(!status.success(), "the child was not killed");
        let t = Instant::now();
        let finished = swap::recover(&layout).unwrap();
        samples.push(t.elapsed());
        assert!(finished.is_some());
    }
    println!(
        "{:<34} recover median of 10 {:>7.2} ms",
        "recovery after a kill mid-swap",
        median(samples).as_secs_f64() * 1e3
    );
}
