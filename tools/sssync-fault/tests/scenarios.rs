//! A short pass of the fault harness: a few hundred seeded scenarios (the soak command runs
//! 10,000: see the README). `SSSYNC_FAULT_SCENARIOS` and `SSSYNC_FAULT_FROM` change which.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_scenarios_lose_nothing_apply_nothing_twice_and_leave_no_client_stuck() {
    let count: u64 = std::env::var("SSSYNC_FAULT_SCENARIOS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let from: u64 = std::env::var("SSSYNC_FAULT_FROM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_sssync-fault"));
    let (reports, failures) = sssync_fault::soak(exe, from, count, 4, |_, _| {}).await;
    for f in &failures {
        println!("{f}");
    }
    let line = sssync_fault::summary(&reports, &failures);
    println!("{line}");
    assert!(failures.is_empty(), "{line}");
}
