//! The route of a request: the envelope frames before the empty delimiter,
//! which the broker keeps to answer a request itself (timeout, drain).
//!
//! A client connected straight to the broker has a one-frame route: the
//! 5-byte identity its ROUTER socket assigned. That common case is stored
//! inline, so remembering a request allocates nothing; longer envelopes
//! (requests relayed through other ROUTERs) fall back to the heap.

/// Longest single route frame stored inline.
const INLINE: usize = 30;

/// A request's route frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// One frame of at most [`INLINE`] bytes.
    Inline {
        /// Used length of `bytes`.
        len: u8,
        /// The frame.
        bytes: [u8; INLINE],
    },
    /// Anything else.
    Frames(Box<[Box<[u8]>]>),
}

impl Route {
    /// Copies the route frames.
    pub fn new<F: std::ops::Deref<Target = [u8]>>(frames: &[F]) -> Self {
        match frames {
            [one] if one.len() <= INLINE => {
                let one: &[u8] = one;
                let mut bytes = [0; INLINE];
                bytes[..one.len()].copy_from_slice(one);
                Route::Inline {
                    len: one.len() as u8,
                    bytes,
                }
            }
            _ => Route::Frames(frames.iter().map(|f| Box::from(&f[..])).collect()),
        }
    }

    /// The frames, in order.
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> + Clone {
        let (inline, boxed): (Option<&[u8]>, &[Box<[u8]>]) = match self {
            Route::Inline { len, bytes } => (Some(&bytes[..usize::from(*len)]), &[]),
            Route::Frames(f) => (None, f),
        };
        inline.into_iter().chain(boxed.iter().map(|b| &b[..]))
    }

    /// Total bytes of the frames.
    pub fn byte_len(&self) -> usize {
        self.frames().map(<[u8]>::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_single_frame_is_inline_and_round_trips() {
        let r = Route::new(&[&b"\x00\x80\x00\x41\xa7"[..]]);
        assert!(matches!(r, Route::Inline { len: 5, .. }));
        assert_eq!(
            r.frames().collect::<Vec<_>>(),
            vec![&b"\x00\x80\x00\x41\xa7"[..]]
        );
        assert_eq!(r.byte_len(), 5);
    }

    #[test]
    fn long_or_several_frames_go_to_the_heap() {
        let long = [7u8; 31];
        let r = Route::new(&[&long[..]]);
        assert!(matches!(r, Route::Frames(_)));
        assert_eq!(r.frames().collect::<Vec<_>>(), vec![&long[..]]);
        let r = Route::new(&[&b"relay"[..], &b"client"[..]]);
        assert_eq!(
            r.frames().collect::<Vec<_>>(),
            vec![&b"relay"[..], &b"client"[..]]
        );
        assert_eq!(r.byte_len(), 11);
        let empty: [&[u8]; 0] = [];
        assert_eq!(Route::new(&empty).frames().count(), 0);
    }
}
