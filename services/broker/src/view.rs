//! The bytes of a received message's frames, each looked up once.
//!
//! Every look-at of a `zmq::Message`'s bytes is two calls into libzmq
//! (`zmq_msg_data` and `zmq_msg_size`); classifying, parsing, counting and
//! forwarding one request used to look at its frames about thirty times.
//! The loop looks each frame up once into a [`Views`] and decides from that;
//! only the frames it forwards are touched again, to move them.

use std::ops::Deref;

/// Frames kept on the stack; a longer message (a deep relay envelope)
/// spills into a `Vec`.
const INLINE: usize = 16;

/// The byte slices of a message's frames, in order.
pub struct Views<'a> {
    inline: [&'a [u8]; INLINE],
    heap: Vec<&'a [u8]>,
    len: usize,
    bytes: usize,
}

impl<'a> Views<'a> {
    /// Looks every frame of `frames` up once.
    pub fn of<F: Deref<Target = [u8]>>(frames: &'a [F]) -> Self {
        let mut v = Views {
            inline: [&[]; INLINE],
            heap: Vec::new(),
            len: frames.len(),
            bytes: 0,
        };
        if frames.len() <= INLINE {
            for (slot, f) in v.inline.iter_mut().zip(frames) {
                *slot = f;
                v.bytes += slot.len();
            }
        } else {
            v.heap = frames.iter().map(|f| &f[..]).collect();
            v.bytes = v.heap.iter().map(|f| f.len()).sum();
        }
        v
    }

    /// Total bytes of the frames (what the traffic metrics count).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl<'a> Deref for Views<'a> {
    type Target = [&'a [u8]];

    fn deref(&self) -> &Self::Target {
        if self.len <= INLINE {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }
}

/// Total bytes of some frames' views.
pub fn byte_len(frames: &[&[u8]]) -> usize {
    frames.iter().map(|f| f.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_messages_view_every_frame_in_order() {
        for n in [0, 1, 4, INLINE, INLINE + 1, 40] {
            let frames: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; i % 5]).collect();
            let v = Views::of(&frames);
            assert_eq!(v.len(), n);
            for (got, want) in v.iter().zip(&frames) {
                assert_eq!(*got, &want[..]);
            }
            let total: usize = frames.iter().map(Vec::len).sum();
            assert_eq!(v.bytes(), total);
            assert_eq!(byte_len(&v), total);
        }
    }
}
