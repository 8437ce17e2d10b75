//! Encode and decode throughput on realistic events: small JSON notifications (~100 B) and
//! larger multi-line payloads (~1 KB), the two shapes a Mercure hub mostly carries.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herald_sse::{Decoder, Event};
use std::hint::black_box;

fn small_event(i: usize) -> Event {
    Event::new(format!(
        r#"{{"@id":"https://example.com/books/{i}","title":"The Book","price":{}.99,"stock":{i}}}"#,
        i % 90
    ))
    .id(format!("urn:uuid:5e94c686-2c0b-4f9b-958c-{i:012}"))
}

fn large_event(i: usize) -> Event {
    let line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_-,.;";
    let data = (0..13).map(|_| line).collect::<Vec<_>>().join("\n");
    Event::new(data)
        .id(format!("urn:uuid:5e94c686-2c0b-4f9b-958c-{i:012}"))
        .event("update")
}

fn bench_shape(c: &mut Criterion, name: &str, make: fn(usize) -> Event) {
    let events: Vec<Event> = (0..1000).map(make).collect();
    let stream: Vec<u8> = events
        .iter()
        .flat_map(|e| e.encode().unwrap().to_vec())
        .collect();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("encode", |b| {
        let mut buf = bytes::BytesMut::with_capacity(stream.len());
        b.iter(|| {
            buf.clear();
            for e in &events {
                e.encode_into(&mut buf).unwrap();
            }
            black_box(buf.len())
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| {
            let mut decoder = Decoder::new();
            let mut n = 0;
            // Network reads arrive in pieces; 4 KiB chunks cut events at arbitrary places.
            for chunk in stream.chunks(4096) {
                decoder.feed(chunk).unwrap();
                while let Some(m) = decoder.next_event() {
                    n += m.data.len();
                }
            }
            black_box(n)
        })
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    bench_shape(c, "small_100B", small_event);
    bench_shape(c, "large_1KB", large_event);
}

criterion_group!(benches, codec);
criterion_main!(benches);
