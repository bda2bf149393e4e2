use super::*;
use proptest::prelude::*;

fn opts(segment: u64, max: u64) -> SpoolOptions {
    SpoolOptions {
        segment_bytes: segment,
        max_bytes: max,
        fsync: FsyncPolicy::Never,
    }
}

fn payload(seq: u64) -> Vec<u8> {
    // Sizes vary with seq so frames do not line up with anything.
    let n = 10 + (seq % 37) as usize;
    (0..n).map(|i| (seq as usize + i) as u8).collect()
}

fn append(w: &mut SpoolWriter, n: u64) -> Commit {
    for _ in 0..n {
        let seq = w.next_seq();
        let got = w.push(|b| b.extend_from_slice(&payload(seq)));
        assert_eq!(got, seq);
    }
    w.commit().expect("commit")
}

/// Reads everything available; checks each payload against its seq.
fn read_all(r: &mut SpoolReader) -> Vec<u64> {
    let mut seqs = Vec::new();
    loop {
        let got = r
            .read(7, 1 << 20, |seq, p| {
                assert_eq!(p, &payload(seq)[..], "payload of seq {seq}");
                seqs.push(seq);
            })
            .expect("read");
        if got.records == 0 {
            return seqs;
        }
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_across_segments() {
    let d = tempfile::tempdir().expect("tempdir");
    let (spool, mut w, rec) = Spool::open(d.path(), opts(4096, 1 << 30)).expect("open");
    assert_eq!(rec.last_seq, 0);
    assert_eq!(w.next_seq(), 1);
    for _ in 0..20 {
        append(&mut w, 17);
    }
    assert!(segments(d.path()).len() > 3, "segments rolled");
    let mut r = spool.reader();
    assert_eq!(r.available(), 340);
    assert_eq!(read_all(&mut r), (1..=340).collect::<Vec<_>>());
    assert_eq!(r.available(), 0);
    let st = spool.stats();
    assert_eq!(st.last_seq, 340);
    assert_eq!(st.records, 340);
    // Rewind (a reconnect) and read it all again.
    r.seek(100);
    assert_eq!(read_all(&mut r), (100..=340).collect::<Vec<_>>());
}

#[test]
fn one_large_commit_is_split_across_segments_and_the_cap_holds() {
    let d = tempfile::tempdir().expect("tempdir");
    let (spool, mut w, _) = Spool::open(d.path(), opts(1024, 4096)).expect("open");
    let c = append(&mut w, 500);
    for s in segments(d.path()) {
        let len = std::fs::metadata(&s).expect("meta").len();
        assert!(len <= 1024, "{} is {len} bytes", s.display());
    }
    let st = spool.stats();
    assert!(st.bytes <= 4096, "{st:?}");
    assert!(c.dropped > 0);
    let seqs = read_all(&mut spool.reader());
    assert_eq!(seqs.len() as u64 + c.dropped, 500);
    assert_eq!(*seqs.last().expect("some"), 500);
}

#[test]
fn batches_respect_limits() {
    let d = tempfile::tempdir().expect("tempdir");
    let (spool, mut w, _) = Spool::open(d.path(), opts(1 << 20, 1 << 30)).expect("open");
    append(&mut w, 100);
    let mut r = spool.reader();
    let got = r.read(10, 1 << 20, |_, _| {}).expect("read");
    assert_eq!((got.records, got.first, got.last), (10, 1, 10));
    // A byte limit smaller than one record still hands out one.
    let got = r.read(10, 1, |_, _| {}).expect("read");
    assert_eq!((got.records, got.first), (1, 11));
    let got = r.read(1000, 100, |_, _| {}).expect("read");
    assert!(got.records >= 2 && got.bytes <= 100 + 50, "{got:?}");
}

#[test]
fn reopen_continues_the_sequence_and_keeps_the_cursor() {
    let d = tempfile::tempdir().expect("tempdir");
    {
        let (spool, mut w, _) = Spool::open(d.path(), opts(2048, 1 << 30)).expect("open");
        append(&mut w, 50);
        assert_eq!(spool.ack(20), 20);
        assert_eq!(spool.ack(10), 0, "the cursor never moves back");
        w.maintain().expect("maintain");
        // Dropped without close(): as after kill -9.
    }
    let (spool, mut w, rec) = Spool::open(d.path(), opts(2048, 1 << 30)).expect("reopen");
    assert_eq!(rec.last_seq, 50);
    assert_eq!(rec.acked, 20);
    assert_eq!(rec.truncated_bytes, 0);
    assert_eq!(w.next_seq(), 51);
    append(&mut w, 5);
    let mut r = spool.reader();
    assert_eq!(read_all(&mut r), (21..=55).collect::<Vec<_>>());
}

#[test]
fn acked_segments_are_deleted_but_never_the_active_one() {
    let d = tempfile::tempdir().expect("tempdir");
    let (spool, mut w, _) = Spool::open(d.path(), opts(1024, 1 << 30)).expect("open");
    for _ in 0..20 {
        append(&mut w, 10);
    }
    let before = segments(d.path()).len();
    assert!(before > 3);
    spool.ack(200);
    w.maintain().expect("maintain");
    assert_eq!(segments(d.path()).len(), 1);
    assert_eq!(spool.stats().records, 0);
    drop(w);
    // Everything acknowledged and only the active segment left: numbering still continues.
    let (_, w, rec) = Spool::open(d.path(), opts(1024, 1 << 30)).expect("reopen");
    assert_eq!(rec.last_seq, 200);
    assert_eq!(w.next_seq(), 201);
}

#[test]
fn a_torn_tail_is_truncated_on_open() {
    let d = tempfile::tempdir().expect("tempdir");
    {
        let (_, mut w, _) = Spool::open(d.path(), opts(1 << 20, 1 << 30)).expect("open");
        append(&mut w, 10);
    }
    let seg = segments(d.path()).pop().expect("segment");
    let len = std::fs::metadata(&seg).expect("meta").len();
    // Half a frame: a header that promises more than follows.
    let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
    f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 11, 0, 0, 0, 0, 0, 0, 0, 9, 9])
        .expect("write");
    drop(f);
    let (spool, mut w, rec) = Spool::open(d.path(), opts(1 << 20, 1 << 30)).expect("reopen");
    assert_eq!(rec.truncated_bytes, 18);
    assert_eq!(std::fs::metadata(&seg).expect("meta").len(), len);
    assert_eq!(w.next_seq(), 11);
    append(&mut w, 2);
    assert_eq!(read_all(&mut spool.reader()), (1..=12).collect::<Vec<_>>());
}

#[test]
fn a_corrupt_frame_in_the_active_segment_ends_it() {
    let d = tempfile::tempdir().expect("tempdir");
    {
        let (_, mut w, _) = Spool::open(d.path(), opts(1 << 20, 1 << 30)).expect("open");
        append(&mut w, 10);
    }
    let seg = segments(d.path()).pop().expect("segment");
    let mut data = std::fs::read(&seg).expect("read");
    // Flip a payload byte of the 4th frame.
    let mut p = HEADER_LEN as usize;
    for _ in 0..3 {
        let len = u32::from_le_bytes([data[p], data[p + 1], data[p + 2], data[p + 3]]) as usize;
        p += FRAME_HEADER + len;
    }
    data[p + FRAME_HEADER] ^= 0xff;
    std::fs::write(&seg, &data).expect("write");
    let (spool, w, rec) = Spool::open(d.path(), opts(1 << 20, 1 << 30)).expect("reopen");
    assert!(rec.truncated_bytes > 0);
    assert_eq!(rec.last_seq, 3);
    assert_eq!(w.next_seq(), 4);
    assert_eq!(read_all(&mut spool.reader()), vec![1, 2, 3]);
}

#[test]
fn a_corrupt_frame_in_a_sealed_segment_is_counted_and_skipped() {
    let d = tempfile::tempdir().expect("tempdir");
    {
        let (_, mut w, _) = Spool::open(d.path(), opts(1024, 1 << 30)).expect("open");
        for _ in 0..10 {
            append(&mut w, 10);
        }
    }
    let segs = segments(d.path());
    assert!(segs.len() >= 3);
    // Corrupt the first frame's checksum in the second segment.
    let mut data = std::fs::read(&segs[1]).expect("read");
    data[HEADER_LEN as usize + 4] ^= 0x55;
    std::fs::write(&segs[1], &data).expect("write");
    let first2: u64 = segs[1]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("name");
    let first3: u64 = segs[2]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("name");
    let (spool, _w, _) = Spool::open(d.path(), opts(1024, 1 << 30)).expect("reopen");
    let mut r = spool.reader();
    let seqs = read_all(&mut r);
    let want: Vec<u64> = (1..first2).chain(first3..=100).collect();
    assert_eq!(seqs, want);
    assert_eq!(r.take_lost(), first3 - first2);
    assert_eq!(r.take_lost(), 0);
}

#[test]
fn the_cap_drops_the_oldest_segments_and_counts_them() {
    let d = tempfile::tempdir().expect("tempdir");
    let (spool, mut w, _) = Spool::open(d.path(), opts(1024, 4096)).expect("open");
    let mut dropped = 0;
    for _ in 0..40 {
        dropped += append(&mut w, 10).dropped;
    }
    let st = spool.stats();
    assert!(st.bytes <= 4096, "{st:?}");
    assert!(dropped > 0);
    let mut r = spool.reader();
    let seqs = read_all(&mut r);
    // What is left is the newest records, in order, and together with the dropped ones it is
    // everything.
    assert_eq!(*seqs.last().expect("some"), 400);
    assert_eq!(seqs.len() as u64 + dropped, 400);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(r.take_lost(), 0, "a cap drop is not corruption");
}

#[test]
fn acknowledged_records_are_not_counted_as_dropped() {
    let d = tempfile::tempdir().expect("tempdir");
    let (spool, mut w, _) = Spool::open(d.path(), opts(1024, 4096)).expect("open");
    let mut dropped = 0;
    for _ in 0..40 {
        dropped += append(&mut w, 10).dropped;
        spool.ack(spool.last_seq());
    }
    assert_eq!(dropped, 0);
}

#[test]
fn a_reader_inside_a_dropped_segment_jumps_ahead() {
    let d = tempfile::tempdir().expect("tempdir");
    let (spool, mut w, _) = Spool::open(d.path(), opts(1024, 4096)).expect("open");
    append(&mut w, 10);
    let mut r = spool.reader();
    let got = r.read(3, 1 << 20, |_, _| {}).expect("read");
    assert_eq!(got.last, 3);
    let mut dropped = 0;
    for _ in 0..40 {
        dropped += append(&mut w, 10).dropped;
    }
    assert!(dropped > 0);
    let seqs = read_all(&mut r);
    assert_eq!(
        seqs.first().copied(),
        Some(spool.stats().last_seq - seqs.len() as u64 + 1)
    );
    assert_eq!(*seqs.last().expect("some"), 410);
}

#[test]
fn a_cursor_ahead_of_the_data_moves_numbering_past_it() {
    let d = tempfile::tempdir().expect("tempdir");
    {
        let (spool, mut w, _) = Spool::open(d.path(), opts(1 << 20, 1 << 30)).expect("open");
        append(&mut w, 10);
        spool.ack(10);
        w.maintain().expect("maintain");
    }
    // The data vanished (a power failure before it reached the disk) but the cursor survived.
    for s in segments(d.path()) {
        let f = OpenOptions::new().write(true).open(&s).expect("open");
        f.set_len(HEADER_LEN).expect("truncate");
    }
    let (spool, mut w, rec) = Spool::open(d.path(), opts(1 << 20, 1 << 30)).expect("reopen");
    assert_eq!(rec.acked, 10);
    assert_eq!(
        w.next_seq(),
        11,
        "seqs the upstream has seen are never reused"
    );
    append(&mut w, 3);
    assert_eq!(read_all(&mut spool.reader()), vec![11, 12, 13]);
}

#[test]
fn a_corrupt_cursor_means_resend_everything() {
    let d = tempfile::tempdir().expect("tempdir");
    {
        let (spool, mut w, _) = Spool::open(d.path(), opts(1 << 20, 1 << 30)).expect("open");
        append(&mut w, 10);
        spool.ack(5);
        w.maintain().expect("maintain");
    }
    std::fs::write(d.path().join(CURSOR_FILE), b"garbage garbage!").expect("write");
    let (spool, _, rec) = Spool::open(d.path(), opts(1 << 20, 1 << 30)).expect("reopen");
    assert_eq!(rec.acked, 0);
    assert_eq!(read_all(&mut spool.reader()), (1..=10).collect::<Vec<_>>());
}

#[test]
fn close_syncs_and_a_reopen_finds_everything() {
    let d = tempfile::tempdir().expect("tempdir");
    let o = SpoolOptions {
        fsync: FsyncPolicy::Always,
        ..opts(2048, 1 << 30)
    };
    {
        let (spool, mut w, _) = Spool::open(d.path(), o).expect("open");
        append(&mut w, 30);
        spool.ack(7);
        w.close().expect("close");
    }
    let (spool, _, rec) = Spool::open(d.path(), o).expect("reopen");
    assert_eq!((rec.last_seq, rec.acked), (30, 7));
    assert_eq!(read_all(&mut spool.reader()), (8..=30).collect::<Vec<_>>());
}

#[test]
fn fsync_policy_parses() {
    assert_eq!("always".parse::<FsyncPolicy>(), Ok(FsyncPolicy::Always));
    assert_eq!("never".parse::<FsyncPolicy>(), Ok(FsyncPolicy::Never));
    assert_eq!(
        "250ms".parse::<FsyncPolicy>(),
        Ok(FsyncPolicy::Interval(Duration::from_millis(250)))
    );
    assert!("0s".parse::<FsyncPolicy>().is_err());
    assert!("sometimes".parse::<FsyncPolicy>().is_err());
    assert_eq!(
        FsyncPolicy::Interval(Duration::from_secs(1)).to_string(),
        "1s"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Append(u64),
    Read(usize),
    AckRead,
    Reconnect,
    Reopen,
    TearTail(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..40).prop_map(Op::Append),
        3 => (1usize..50).prop_map(Op::Read),
        2 => Just(Op::AckRead),
        1 => Just(Op::Reconnect),
        1 => Just(Op::Reopen),
        1 => (1u8..30).prop_map(Op::TearTail),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the order of appends, reads, acks, reconnects, restarts and torn writes, a
    /// reader hands out every unacknowledged record once per pass, in order, with its own
    /// payload, and numbering never goes back.
    #[test]
    fn the_spool_loses_and_reorders_nothing(ops in proptest::collection::vec(op(), 1..60)) {
        let d = tempfile::tempdir().expect("tempdir");
        let o = opts(1024, 1 << 30);
        let (mut spool, mut w, _) = Spool::open(d.path(), o).expect("open");
        let mut r = spool.reader();
        let mut written = 0u64;
        let mut delivered_upto = 0u64;
        let mut max_seq_seen = 0u64;
        for op in ops {
            match op {
                Op::Append(n) => {
                    let c = append(&mut w, n);
                    prop_assert_eq!(c.dropped, 0);
                    written += n;
                }
                Op::Read(n) => {
                    let mut expect = r.next_seq();
                    r.read(n, 1 << 20, |seq, p| {
                        assert_eq!(seq, expect);
                        assert_eq!(p, &payload(seq)[..]);
                        expect += 1;
                    }).expect("read");
                    delivered_upto = delivered_upto.max(expect - 1);
                }
                Op::AckRead => {
                    spool.ack(r.next_seq() - 1);
                    w.maintain().expect("maintain");
                }
                Op::Reconnect => r.seek(spool.acked() + 1),
                Op::Reopen => {
                    drop(r);
                    drop(w);
                    let (s2, w2, rec) = Spool::open(d.path(), o).expect("reopen");
                    prop_assert_eq!(rec.last_seq, written);
                    prop_assert_eq!(rec.truncated_bytes, 0);
                    spool = s2;
                    w = w2;
                    r = spool.reader();
                }
                Op::TearTail(n) => {
                    // A crash in the middle of a write: junk after the last frame.
                    let seg = segments(d.path()).pop().expect("segment");
                    drop(r);
                    drop(w);
                    let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
                    f.write_all(&vec![0xA5; n as usize]).expect("write");
                    drop(f);
                    let (s2, w2, rec) = Spool::open(d.path(), o).expect("reopen");
                    prop_assert_eq!(rec.truncated_bytes, u64::from(n));
                    prop_assert_eq!(rec.last_seq, written);
                    spool = s2;
                    w = w2;
                    r = spool.reader();
                }
            }
            prop_assert_eq!(w.next_seq(), written + 1);
            max_seq_seen = max_seq_seen.max(delivered_upto);
        }
        // A final pass from the cursor finds exactly the unacknowledged records.
        r.seek(spool.acked() + 1);
        let rest = read_all(&mut r);
        let want: Vec<u64> = (spool.acked() + 1..=written).collect();
        prop_assert_eq!(rest, want);
        prop_assert!(max_seq_seen <= written);
    }
}
