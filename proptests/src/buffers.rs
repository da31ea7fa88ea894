//! Property of src/buffers.rs: an `OverflowableBuffer` behaves like a plain vector, across
//! its switch from memory to a temporary file.
use proptest::prelude::*;
use waitress::buffers::OverflowableBuffer;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>),
    Get(usize, bool),
    Peek(usize),
    Skip(usize),
    Prune,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Op::Append),
        (0usize..50, any::<bool>()).prop_map(|(n, s)| Op::Get(n, s)),
        (0usize..50).prop_map(Op::Peek),
        (0usize..50).prop_map(Op::Skip),
        Just(Op::Prune),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    /// (d) The buffer behaves like a plain vector, across the memory/file switch.
    #[test]
    fn overflowable_buffer_matches_a_vec(overflow in 1usize..64, ops in proptest::collection::vec(op(), 1..40)) {
        let mut buf = OverflowableBuffer::new(overflow);
        let mut model: Vec<u8> = Vec::new();
        for op in ops {
            match op {
                Op::Append(data) => {
                    buf.append(&data).unwrap();
                    model.extend_from_slice(&data);
                }
                Op::Get(n, skip) => {
                    let got = buf.get(Some(n), skip).unwrap();
                    let k = n.min(model.len());
                    prop_assert_eq!(&got[..], &model[..k]);
                    if skip {
                        model.drain(..k);
                    }
                }
                Op::Peek(n) => {
                    let k = n.min(model.len());
                    prop_assert_eq!(buf.peek(n).unwrap(), &model[..k]);
                }
                Op::Skip(n) => {
                    let result = buf.skip(n, false);
                    if n <= model.len() {
                        prop_assert!(result.is_ok());
                        model.drain(..n);
                    } else {
                        prop_assert!(result.is_err());
                    }
                }
                Op::Prune => buf.prune().unwrap(),
            }
            prop_assert_eq!(buf.len(), model.len());
        }
    }
}
