//! Key computation: the work every cacheable request does before a lookup.

use criterion::{Criterion, criterion_group, criterion_main};
use nagare_cache::key::{KeyContent, KeyInput, key};

fn bench(c: &mut Criterion) {
    // A 4 KB request: a system prompt, a short history and the new message.
    let system = "You are a helpful assistant. ".repeat(10);
    let history = "Earlier turn text. ".repeat(60);
    let message = "What is the refund policy for orders shipped abroad? ".repeat(40);
    let texts = [
        ("user", history.as_str()),
        ("assistant", history.as_str()),
        ("user", message.as_str()),
    ];
    let messages = texts.map(|(role, text)| (role, KeyContent::Text(text)));
    let stop = vec!["END".to_owned()];
    let input = KeyInput {
        scope: "acme",
        model_id: "anthropic.claude-3-haiku-20240307-v1:0",
        system: Some(&system),
        messages: &messages,
        max_tokens: Some(1024),
        temperature: Some(0.7),
        top_p: None,
        stop: &stop,
        options: None,
    };
    let bytes: usize = system.len() + texts.iter().map(|(_, t)| t.len()).sum::<usize>();
    c.bench_function(
        &format!("cache key of a {} KB request", bytes / 1024),
        |b| b.iter(|| key(std::hint::black_box(&input))),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
