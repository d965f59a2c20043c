//! io_uring refusals: what fdinfo says the ring holds.

use crate::kinds::fd::uring::{UringInfo, parse, refusal};

const INFO: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t12235263\nSqMask:\t0x7\n\
SqHead:\t1\nSqTail:\t3\nCachedSqHead:\t1\nCqMask:\t0xf\nCqHead:\t0\nCqTail:\t1\n\
CachedCqTail:\t1\nSQEs:\t2\n    1: opcode:NOP, fd:0, flags:0, off:0, addr:0x0, rw_flags:0x0, buf_index:0 user_data:101\n\
CQEs:\t1\n    0: user_data:100, res:0, flag:0\nSqThread:\t-1\nSqThreadCpu:\t-1\n\
UserFiles:\t2\n    0: /dev/null\n    1: /tmp/a b\nUserBufs:\t1\n    0: 0x562616d8c0c0/4096\n\
PollList:\nCqOverflowList:\nNAPI:\tdisabled\n";

#[test]
fn fdinfo_tells_queues_and_registrations() {
    assert_eq!(
        parse(INFO),
        Some(UringInfo {
            sq_entries: 8,
            cq_entries: 16,
            sq_queued: 2,
            cq_ready: 1,
            files: vec!["/dev/null".into(), "/tmp/a b".into()],
            buffers: 1,
            sq_thread: None,
            overflow: 0,
        })
    );
    let r = refusal(INFO);
    assert!(
        r.starts_with(
            "an io_uring instance with 8 submission and 16 completion entries, holding 2 \
             submissions queued and not consumed by the kernel, 1 completion not reaped, 2 \
             registered files (/dev/null, /tmp/a b), 1 registered buffer; "
        ),
        "{r}"
    );
    // an SQ polling thread, overflowed completions, counters that wrapped
    let more = INFO
        .replace("SqThread:\t-1", "SqThread:\t4242")
        .replace(
            "CqOverflowList:\n",
            "CqOverflowList:\n  user_data:7 res:0 flags:0\n",
        )
        .replace("SqHead:\t1", "SqHead:\t4294967295");
    let u = parse(&more).expect("parses");
    assert_eq!((u.sq_thread, u.overflow, u.sq_queued), (Some(4242), 1, 4));
    assert!(refusal(&more).contains("1 completion the ring had no room for"));
    assert!(refusal(&more).contains("an SQ polling thread (4242)"));
    // an fdinfo without the fields: the general refusal
    assert!(refusal("pos:\t0\n").contains("cannot be saved"));
}
