//! A chat room application on Gristmill: persisted grains, grain-to-grain calls, a worker.
//!
//! Run it with `cargo run --example chat_room`. It starts one node on 127.0.0.1 with a
//! temporary SQLite file and a random cookie, lets two users talk in a room, prints the room's
//! history and each user's post count, and leaves the cluster.
//!
//! Three grain types make up the application:
//! - `room`, keyed by room name, persists the room's messages;
//! - `user`, keyed by user name, persists how many messages the user posted, and posts through
//!   the other two grains;
//! - `filter` is a stateless worker that masks banned words. The node runs up to
//!   [`FILTER_WORKERS`] activations of it, so filtering never queues behind one grain.

use std::error::Error;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use gristmill::grain::{
    Grain, GrainContext, GrainError, GrainRegistry, GrainTypeOptions, Handler, Method, Methods,
};
use gristmill::membership::NodeState;
use gristmill::runtime::{Node, NodeConfig};
use gristmill::storage::StorageConfig;
use serde::{Deserialize, Serialize};

/// Error type of the example's entry points.
pub type ExampleError = Box<dyn Error + Send + Sync>;

/// Words the filter replaces with asterisks.
pub const BANNED_WORDS: [&str; 2] = ["spam", "scam"];
/// Activations of the filter per node.
pub const FILTER_WORKERS: u32 = 4;
/// Time the node has to become Active after it starts.
const START_WITHIN: Duration = Duration::from_secs(10);

/// One message in a room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Name of the user who posted it.
    pub from: String,
    /// The filtered text.
    pub text: String,
}

/// A chat room whose history is persisted after every post.
#[derive(Debug)]
pub struct Room {
    state: RoomState,
}

/// The persisted state of a room.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RoomState {
    /// Every message posted, oldest first.
    pub messages: Vec<ChatMessage>,
}

/// Appends a message to the room and returns its position in the history, from 0.
#[derive(Debug, Serialize, Deserialize)]
pub struct Post {
    /// The message to append.
    pub message: ChatMessage,
}

impl Method for Post {
    const NAME: &'static str = "post";
    type Response = u64;
}

/// Returns the last `limit` messages of the room, oldest first.
#[derive(Debug, Serialize, Deserialize)]
pub struct History {
    /// Maximum number of messages to return.
    pub limit: u32,
}

impl Method for History {
    const NAME: &'static str = "history";
    type Response = Vec<ChatMessage>;
}

impl Grain for Room {
    const TYPE_NAME: &'static str = "room";

    async fn activate(ctx: &mut GrainContext) -> Result<Self, GrainError> {
        Ok(Room {
            state: ctx.read_state().await?,
        })
    }

    fn register(methods: &mut Methods<Self>) {
        methods.add::<Post>().add::<History>();
    }
}

impl Handler<Post> for Room {
    async fn handle(&mut self, request: Post, ctx: &mut GrainContext) -> Result<u64, GrainError> {
        let position = self.state.messages.len() as u64;
        self.state.messages.push(request.message);
        // Acknowledge only a stored message: undo the append if the write fails.
        if let Err(error) = ctx.write_state(&self.state).await {
            self.state.messages.pop();
            return Err(error);
        }
        Ok(position)
    }
}

impl Handler<History> for Room {
    async fn handle(
        &mut self,
        request: History,
        _ctx: &mut GrainContext,
    ) -> Result<Vec<ChatMessage>, GrainError> {
        let messages = &self.state.messages;
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        let skip = messages.len().saturating_sub(limit);
        Ok(messages[skip..].to_vec())
    }
}

/// A chat user that counts its posts in persisted state.
#[derive(Debug)]
pub struct User {
    state: UserState,
}

/// The persisted state of a user.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct UserState {
    /// Number of messages the user posted.
    pub posted: u64,
}

/// Filters `text`, posts it in `room` as this user, and returns its position in the room.
#[derive(Debug, Serialize, Deserialize)]
pub struct Say {
    /// Name of the room (the key of its `room` grain).
    pub room: String,
    /// The unfiltered text.
    pub text: String,
}

impl Method for Say {
    const NAME: &'static str = "say";
    type Response = u64;
}

/// Returns the number of messages the user posted.
#[derive(Debug, Serialize, Deserialize)]
pub struct Posted;

impl Method for Posted {
    const NAME: &'static str = "posted";
    type Response = u64;
}

impl Grain for User {
    const TYPE_NAME: &'static str = "user";

    async fn activate(ctx: &mut GrainContext) -> Result<Self, GrainError> {
        Ok(User {
            state: ctx.read_state().await?,
        })
    }

    fn register(methods: &mut Methods<Self>) {
        methods.add::<Say>().add::<Posted>();
    }
}

impl Handler<Say> for User {
    async fn handle(&mut self, request: Say, ctx: &mut GrainContext) -> Result<u64, GrainError> {
        // Grain-to-grain calls: any key of the stateless filter will do.
        let text = ctx
            .grain::<Filter>("shared")
            .call(Clean { text: request.text })
            .await?;
        let message = ChatMessage {
            from: ctx.key().to_owned(),
            text,
        };
        let position = ctx
            .grain::<Room>(request.room)
            .call(Post { message })
            .await?;
        let posted = self.state.posted + 1;
        ctx.write_state(&UserState { posted }).await?;
        self.state.posted = posted;
        Ok(position)
    }
}

impl Handler<Posted> for User {
    async fn handle(
        &mut self,
        _request: Posted,
        _ctx: &mut GrainContext,
    ) -> Result<u64, GrainError> {
        Ok(self.state.posted)
    }
}

/// A stateless worker that replaces each of the [`BANNED_WORDS`] with asterisks.
#[derive(Debug)]
pub struct Filter;

/// Returns `text` with every banned word masked.
#[derive(Debug, Serialize, Deserialize)]
pub struct Clean {
    /// The text to filter.
    pub text: String,
}

impl Method for Clean {
    const NAME: &'static str = "clean";
    type Response = String;
}

impl Grain for Filter {
    const TYPE_NAME: &'static str = "filter";

    async fn activate(_ctx: &mut GrainContext) -> Result<Self, GrainError> {
        Ok(Filter)
    }

    fn register(methods: &mut Methods<Self>) {
        methods.add::<Clean>();
    }
}

impl Handler<Clean> for Filter {
    async fn handle(
        &mut self,
        request: Clean,
        _ctx: &mut GrainContext,
    ) -> Result<String, GrainError> {
        let mut text = request.text;
        for word in BANNED_WORDS {
            text = text.replace(word, &"*".repeat(word.len()));
        }
        Ok(text)
    }
}

/// Returns the registry of the application's grain types.
pub fn registry() -> GrainRegistry {
    let filter = GrainTypeOptions {
        stateless_worker: NonZeroU32::new(FILTER_WORKERS),
        ..GrainTypeOptions::default()
    };
    let mut registry = GrainRegistry::new();
    registry
        .register::<Room>()
        .register::<User>()
        .register_with::<Filter>(filter);
    registry
}

/// Outcome of one run: the room's history and each user's post count.
#[derive(Debug)]
pub struct Transcript {
    /// The room's messages, oldest first.
    pub history: Vec<ChatMessage>,
    /// Post count of each user, by user name.
    pub posted: Vec<(String, u64)>,
}

/// Starts a node that stores its state under `data_dir`, chats, and leaves the cluster.
pub async fn run(data_dir: &Path) -> Result<Transcript, ExampleError> {
    let storage = StorageConfig {
        sqlite_path: data_dir.join("chat.sqlite3"),
        ..StorageConfig::default()
    };
    let config = NodeConfig {
        node_name: "chat".into(),
        cookie: format!("{:032x}", rand::random::<u128>()),
        metrics_port: None,
        storage,
        ..NodeConfig::default()
    };
    let node = Node::start(config, registry()).await?;
    let mut state = node.watch_state();
    tokio::time::timeout(START_WITHIN, state.wait_for(|s| *s == NodeState::Active)).await??;

    let lines = [
        ("ada", "hello, is anyone here?"),
        ("grace", "hi ada! did you get that spam mail?"),
        ("ada", "yes, an obvious scam"),
    ];
    for (user, text) in lines {
        node.grain::<User>(user)
            .call(Say {
                room: "lobby".into(),
                text: text.into(),
            })
            .await?;
    }
    let history = node
        .grain::<Room>("lobby")
        .call(History { limit: 10 })
        .await?;
    let mut posted = Vec::new();
    for user in ["ada", "grace"] {
        posted.push((
            user.to_owned(),
            node.grain::<User>(user).call(Posted).await?,
        ));
    }

    node.leave().await;
    Ok(Transcript { history, posted })
}

#[tokio::main]
async fn main() -> Result<(), ExampleError> {
    let data_dir = tempfile::tempdir()?;
    let transcript = run(data_dir.path()).await?;
    println!("#lobby:");
    for message in &transcript.history {
        println!("  <{}> {}", message.from, message.text);
    }
    for (user, posted) in &transcript.posted {
        let noun = if *posted == 1 { "message" } else { "messages" };
        println!("{user} posted {posted} {noun}");
    }
    Ok(())
}
