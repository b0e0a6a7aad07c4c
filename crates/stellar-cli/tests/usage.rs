//! The command line as people type it: flags in any position, and the messages a person meets.

mod support;

use std::process::Output;

use stellar_testkit::RedisServer;
use support::stellar;

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn backend_flags_are_accepted_after_the_subcommand() {
    let redis = RedisServer::start();
    let url = redis.url();
    let set = stellar(&["cache", "set", "foo", "42", "--redis", &url])
        .output()
        .expect("run");
    assert!(set.status.success(), "{:?}", text(&set));
    let get = stellar(&[
        "cache",
        "get",
        "foo",
        "--redis",
        &url,
        "--server-token",
        "usage-test-token",
    ])
    .output()
    .expect("run");
    assert!(get.status.success(), "{:?}", text(&get));
    assert_eq!(text(&get).0.trim(), "42");
    // Before the subcommand's name too, and on `tasks`, which checks the token.
    let stats = stellar(&[
        "--redis",
        &url,
        "tasks",
        "stats",
        "--server-token",
        "usage-test-token",
    ])
    .output()
    .expect("run");
    assert!(stats.status.success(), "{:?}", text(&stats));
}
