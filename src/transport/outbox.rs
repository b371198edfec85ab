
#[cfg(test)]
mod tests {
    use super::*;

    fn outboxes() -> Outboxes {
        Outboxes::new("node-a".into(), 64 * 1024)
    }

    fn reply() -> CallReply {
        CallReply::NotHere
    }

    #[test]
    fn reply_from_serving_peer_completes_call() {
        let outboxes = outboxes();
        let mut call = outboxes.register("node-b");
        outboxes.complete_from("node-b", call.id, reply());
        assert!(matches!(call.reply.try_recv(), Ok(Ok(CallReply::NotHere))));
    }

    #[test]
    fn reply_from_other_peer_is_dropped() {
        let outboxes = outboxes();
        let mut call = outboxes.register("node-b");
        outboxes.complete_from("node-c", call.id, reply());
        assert!(
            call.reply.try_recv().is_err(),
            "a peer completed a call that it does not serve"
        );
        outboxes.complete_from("node-b", call.id, reply());
        assert!(matches!(call.reply.try_recv(), Ok(Ok(_))));
    }

    #[test]
    fn fail_peer_ends_only_its_calls() {
        let outboxes = outboxes();
        let mut to_b = outboxes.register("node-b");
        let mut to_c = outboxes.register("node-c");
        outboxes.fail_peer("node-b", || {
            PeerError::Lost("node-b".into(), "session ended".into())
        });
        assert!(matches!(to_b.reply.try_recv(), Ok(Err(PeerError::Lost(..)))));
        assert!(to_c.reply.try_recv().is_err(), "the call to node-c still waits");
    }

    #[test]
    fn dropped_call_is_forgotten() {
        let outboxes = outboxes();
        let call = outboxes.register("node-b");
        let id = call.id;
        drop(call);
        let pending = outboxes.pending.lock().expect("pending calls lock poisoned");
        assert!(!pending.contains_key(&id));
    }

    #[test]
    fn fail_all_ends_every_call() {
        let outboxes = outboxes();
        let mut to_b = outboxes.register("node-b");
        let mut to_c = outboxes.register("node-c");
        outboxes.fail_all(|peer| PeerError::Lost(peer.to_string(), "stopping".into()));
        assert!(matches!(to_b.reply.try_recv(), Ok(Err(PeerError::Lost(peer, _))) if peer == "node-b"));
        assert!(matches!(to_c.reply.try_recv(), Ok(Err(PeerError::Lost(peer, _))) if peer == "node-c"));
    }
}
