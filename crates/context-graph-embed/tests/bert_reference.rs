//! The `bert` provider against the reference implementation: vectors that
//! sentence-transformers computed once for the same texts with the same model
//! (`fixtures/make_minilm_reference.py` made the fixture).

mod common;

use context_graph_embed::bert::Bert;

#[derive(serde::Deserialize)]
struct Reference {
    made_by: String,
    texts: Vec<String>,
    pooled: Vec<Vec<f32>>,
    token_texts: Vec<usize>,
    tokens: Vec<Vec<Vec<f32>>>,
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(a) * n(b))
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("fixtures/minilm_reference.json")).expect("the fixture parses")
}

#[test]
fn pooled_vectors_match_sentence_transformers() {
    let reference = reference();
    let bert = Bert::load(&common::model_dir(), None).expect("the model loads");
    assert_eq!(bert.hidden_size(), 384);
    assert_eq!(bert.max_tokens(), 256, "sentence_bert_config.json's max_seq_length");
    let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
    let ours = bert.encode(&texts).unwrap();
    let mut lowest = 1f32;
    for (i, (mine, theirs)) in ours.iter().zip(&reference.pooled).enumerate() {
        let c = cosine(&mine.pooled, theirs);
        lowest = lowest.min(c);
        assert!(
            c >= 0.999,
            "text {i} {:?}: cosine {c} against {}",
            &texts[i][..texts[i].len().min(40)],
            reference.made_by
        );
        let norm: f32 = mine.pooled.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "pooled vectors are normalized, text {i} has norm {norm}");
    }
    eprintln!("lowest pooled cosine against sentence-transformers: {lowest}");
    // The long text is cut at 256 word pieces, as the reference cuts it.
    let long = ours.last().unwrap();
    assert_eq!(long.tokens.len(), 256);

    // One text at a time gives the same vector as in a padded batch.
    let alone = bert.encode(&texts[1..2]).unwrap();
    assert!(cosine(&alone[0].pooled, &ours[1].pooled) > 0.99999);
}

#[test]
fn per_token_vectors_match_sentence_transformers() {
    let reference = reference();
    let bert = Bert::load(&common::model_dir(), None).expect("the model loads");
    for (&i, theirs) in reference.token_texts.iter().zip(&reference.tokens) {
        let ours = bert.encode(&[reference.texts[i].as_str()]).unwrap().remove(0);
        assert_eq!(ours.tokens.len(), theirs.len(), "text {i}: token count");
        let mut lowest = 1f32;
        for (t, (mine, theirs)) in ours.tokens.iter().zip(theirs).enumerate() {
            let c = cosine(mine, theirs);
            lowest = lowest.min(c);
            assert!(c >= 0.999, "text {i} token {t}: cosine {c}");
        }
        eprintln!("text {i}: {} tokens, lowest per-token cosine {lowest}", ours.tokens.len());
    }
}

#[test]
fn a_directory_without_a_model_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = Bert::load(dir.path(), None).err().expect("no model, no load");
    assert!(e.contains("config.json"), "{e}");
    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 3}").unwrap();
    let e = Bert::load(dir.path(), None).err().unwrap();
    assert!(e.contains("not a BERT config"), "{e}");
}
