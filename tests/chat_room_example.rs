//! Runs the `chat_room` example in this test process and checks what it reports.
//!
//! The example's source is compiled into this test as a module, so `cargo test` runs the
//! same code as `cargo run --example chat_room`. ractor keeps process-global registries, so
//! this binary starts exactly one node.

#[allow(dead_code)]
#[path = "../examples/chat_room.rs"]
mod chat_room;

use chat_room::ChatMessage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_room_example_posts_filtered_messages() {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let transcript = chat_room::run(data_dir.path())
        .await
        .expect("the example runs");

    let message = |from: &str, text: &str| ChatMessage {
        from: from.into(),
        text: text.into(),
    };
    let expected = vec![
        message("ada", "hello, is anyone here?"),
        message("grace", "hi ada! did you get that **** mail?"),
        message("ada", "yes, an obvious ****"),
    ];
    assert_eq!(transcript.history, expected);
    assert_eq!(
        transcript.posted,
        vec![("ada".to_owned(), 2), ("grace".to_owned(), 1)]
    );
}
