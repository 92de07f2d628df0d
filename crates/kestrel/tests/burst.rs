//! A burst of execs: every one is either emitted or counted as lost.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{marker, Agent};

const BURST: usize = 20_000;

#[test]
fn exec_burst_is_emitted_or_counted() {
    let agent = Agent::start(&["--stats-interval-secs", "5"]);
    let mark = marker("burst");
    let started = Instant::now();
    // Two spawning threads keep both cores busy, as a real storm would.
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..BURST / 2 {
                    Command::new("/bin/true")
                        .arg(&mark)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .unwrap();
                }
            });
        }
    });
    let spawn_secs = started.elapsed().as_secs_f64();

    // Let the agent drain, then stop it: it drains what is left and logs
    // its final counters.
    let count = |agent: &Agent| {
        agent
            .events()
            .iter()
            .filter(|e| {
                e["data_type"] == "59" && e["argv"].as_str().is_some_and(|a| a.contains(&mark))
            })
            .count()
    };
    let mut last = usize::MAX;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let n = count(&agent);
        if n == last || n >= BURST || Instant::now() > deadline {
            break;
        }
        last = n;
    }
    let events = agent.events();
    let emitted = events
        .iter()
        .filter(|e| e["data_type"] == "59" && e["argv"].as_str().is_some_and(|a| a.contains(&mark)))
        .count();
    drop(events);
    let c = agent.stop();
    let emitted_final = emitted;
    let lost = c["exec_lost"];
    println!(
        "burst of {BURST} execs in {spawn_secs:.1}s: {emitted_final} emitted, {lost} exec records lost in the kernel, \
         {} decode errors, {} write errors, {} processes gone before /proc was read",
        c["decode_errors"], c["write_errors"], c["process_gone"]
    );
    assert!(emitted_final <= BURST);
    assert!(
        emitted_final as u64 + lost >= BURST as u64,
        "{emitted_final} emitted + {lost} lost < {BURST}: events vanished without a count"
    );
    // Alerts (data_type 9000) are events the agent adds.
    assert_eq!(
        c["received"] + c["alerts"],
        c["emitted"] + c["decode_errors"] + c["write_errors"]
    );
}
