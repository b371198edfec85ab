//! The world's pending events, ordered by a key, with the events stored apart from the heap.
//!
//! A binary heap moves O(log n) of its elements on every push and pop. The world's event is
//! 200 bytes (x86-64), and a large run keeps a pending event for every timer and message in
//! flight, so the heap holds only each event's key and its index in a slab. Events come out
//! smallest key first, and the keys are unique, so equal keys never need a tie-break.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Events of type `E` waiting to be taken out in the order of their keys `K`.
pub(crate) struct EventQueue<K, E> {
    heap: BinaryHeap<Reverse<(K, usize)>>,
    slab: Vec<Option<E>>,
    /// Slab slots whose event was taken out, reused by the next pushes.
    free: Vec<usize>,
}

impl<K: Ord + Copy, E> EventQueue<K, E> {
    /// Creates an empty queue.
    pub(crate) fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Adds `event` under `key`, which must differ from the key of every event in the queue.
    pub(crate) fn push(&mut self, key: K, event: E) {
        let index = match self.free.pop() {
            Some(index) => {
                self.slab[index] = Some(event);
                index
            }
            None => {
                self.slab.push(Some(event));
                self.slab.len() - 1
            }
        };
        self.heap.push(Reverse((key, index)));
    }

    /// Returns the smallest key in the queue.
    pub(crate) fn peek_key(&self) -> Option<K> {
        self.heap.peek().map(|Reverse((key, _))| *key)
    }

    /// Takes out the event with the smallest key, with its key.
    pub(crate) fn pop(&mut self) -> Option<(K, E)> {
        let Reverse((key, index)) = self.heap.pop()?;
        let event = self.slab[index]
            .take()
            .expect("the heap lists only slots that hold an event");
        self.free.push(index);
        Some((key, event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_key_order() {
        let mut queue = EventQueue::new();
        for key in [5_u64, 1, 4, 2, 3] {
            queue.push(key, format!("event {key}"));
        }

        let mut popped = Vec::new();
        while let Some((key, event)) = queue.pop() {
            assert_eq!(event, format!("event {key}"));
            popped.push(key);
        }

        assert_eq!(popped, [1, 2, 3, 4, 5]);
        assert_eq!(queue.peek_key(), None);
    }

    #[test]
    fn reuses_slots_of_popped_events() {
        let mut queue = EventQueue::new();
        queue.push(1_u64, 'a');
        queue.push(2, 'b');
        assert_eq!(queue.pop(), Some((1, 'a')));

        queue.push(0, 'c');
        queue.push(3, 'd');

        assert_eq!(queue.slab.len(), 3, "the slot of 'a' is reused");
        assert_eq!(queue.peek_key(), Some(0));
        assert_eq!(queue.pop(), Some((0, 'c')));
        assert_eq!(queue.pop(), Some((2, 'b')));
        assert_eq!(queue.pop(), Some((3, 'd')));
        assert_eq!(queue.pop(), None);
    }
}
