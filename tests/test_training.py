"""SFT and GRPO on the tiny student: learning signal, the audio-alignment trap, resume, pinned values."""

import json
import shutil

import pytest

from sightsound.config import ConfigError
import torch

from sightsound import prompts, rl
from sightsound.models import ModelConfig, load_backend
from sightsound.models.hf import HFBackend
from sightsound.records import Consensus, CorpusRow, Sample
from sightsound.store import read_jsonl, to_json
from sightsound.manifest import read_manifest
from sightsound.stages import evaluate, grpo, sft
from sightsound.models.loading import load_model
from sightsound.training.student import LoraConfig, add_lora, build_batch, completion_logps
from tests.conftest import make_wav


@pytest.fixture(scope="module")
def toy_run(prepared, tmp_path_factory):
    """A run directory with 16 samples, a corpus of short CoT traces and unanimous teacher labels."""
    run = tmp_path_factory.mktemp("toy")
    samples = list(read_jsonl(prepared / "samples.jsonl", Sample))[:16]
    (run / "samples.jsonl").write_text("".join(json.dumps(s.__dict__) + "\n" for s in samples))
    corpus = [CorpusRow(f"{s.id}#0", s.id, 0, s.dataset, s.split, s.category, s.audio, s.question, s.options,
                        f"<think>I hear it.</think><answer>{'ABCD'[s.answer]}</answer>", s.answer, s.answer_text)
              for s in samples]
    consensus = [Consensus(s.id, [s.answer], True, s.answer, s.answer_text, True, s.category) for s in samples]
    for path, rows in ((run / "corpus.jsonl", corpus), (run / "consensus.jsonl", consensus)):
        path.write_text("".join(json.dumps(to_json(row)) + "\n" for row in rows))
    return run


def sft_config(run, tiny_models, **kw):
    kw = {"model": str(tiny_models["student"]), "target": "cot", "steps": 4, "batch_size": 4, "lr": 1e-3,
          "log_every": 1, "save_every": 2, "progress": False, **kw}
    return sft.SFTConfig(out=str(run), **kw)


def copy_run(toy_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    return run


@pytest.mark.parametrize("student", ["student", "omni"])
def test_lora_targets_the_language_model_only(tiny_models, student):
    model, _ = load_model(tiny_models[student])
    model = add_lora(model, LoraConfig())
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all("language_model" in n and "lora_" in n for n in trained)
    assert not any("audio_tower" in n for n in trained)


def test_frozen_modules_stay_as_they_were_and_checkpointing_changes_no_gradient(tiny_models, toy_run, tmp_path):
    from safetensors.torch import load_file

    from sightsound.training.student import prepare_for_training

    run = copy_run(toy_run, tmp_path)
    sft.main(sft_config(run, tiny_models, lora=LoraConfig(enabled=False), freeze=["audio_tower"],
                        gradient_checkpointing=True, steps=2, save_every=2))
    before = load_file(str(tiny_models["student"] / "model.safetensors"))
    after = load_file(str(run / "sft" / "final" / "model.safetensors"))
    tower = [k for k in before if "audio_tower" in k]
    assert tower and all(torch.equal(before[k], after[k]) for k in tower)  # frozen: untouched
    assert any(not torch.equal(before[k], after[k]) for k in before if "language_model" in k)  # trained

    _, processor = load_model(tiny_models["student"])
    examples, _ = sft.load_examples(run, sft.SFTConfig(target="cot"))
    batch = build_batch(processor, examples[:3])
    grads = []
    for checkpointing in (False, True):
        model, _ = load_model(tiny_models["student"])
        model = prepare_for_training(model, gradient_checkpointing=checkpointing)
        model.train()
        model(**batch).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        assert (grads[1][name] - grad).norm() <= 1e-5 * grad.norm().clamp(min=1e-12), name


def test_sft_loss_without_full_logits_equals_the_models_own(tiny_models, toy_run):
    """`response_loss` (the LM head on the response positions only, a few rows at a time) gives the
    model's own loss and the same gradients, with LoRA as SFT trains."""
    from sightsound.training.student import response_loss

    _, processor = load_model(tiny_models["student"])
    examples, _ = sft.load_examples(toy_run, sft.SFTConfig(target="cot"))
    batch = build_batch(processor, examples[:3])
    results = []
    for loss_of in (lambda m: m(**batch).loss, lambda m: response_loss(m, batch, rows=7)):
        torch.manual_seed(0)
        model = add_lora(load_model(tiny_models["student"])[0], LoraConfig(rank=4, dropout=0.0))
        model.train()
        loss = loss_of(model)
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (expected, expected_grads), (loss, grads) = results
    assert torch.allclose(loss, expected, rtol=1e-5) and grads.keys() == expected_grads.keys() and grads
    for name, grad in expected_grads.items():
        assert (grads[name] - grad).norm() <= 1e-4 * grad.norm().clamp(min=1e-12), name


def test_batches_grouped_by_length_pad_less_and_resume_the_same():
    """`Batches(lengths=...)`: every item once per epoch, far less padding than a plain shuffle,
    the same order when resumed; without lengths the order is the plain seeded shuffle it was."""
    import random

    from sightsound.training.loop import Batches

    lengths = [random.Random(i).randint(20, 500) for i in range(4096)]
    size, batches = 8, 4096 // 8

    def padding(order):
        drawn = [order.next() for _ in range(batches)]
        assert sorted(i for batch in drawn for i in batch) == list(range(4096))  # one epoch, each item once
        return sum(size * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in drawn), drawn

    plain, plain_batches = padding(Batches(4096, size, seed=3))
    grouped, grouped_batches = padding(Batches(4096, size, seed=3, lengths=lengths))
    assert grouped < 0.1 * plain
    expected = list(range(4096))
    random.Random(3).shuffle(expected)
    assert [i for b in plain_batches for i in b] == expected
    resumed = Batches(4096, size, seed=3, skip=100, lengths=lengths)
    assert [resumed.next() for _ in range(batches - 100)] == grouped_batches[100:]


def test_sft_trains_on_batches_grouped_by_length(toy_run, tiny_models, tmp_path):
    run = copy_run(toy_run, tmp_path)
    manifest = sft.main(sft_config(run, tiny_models, steps=2, save_every=100, group_by_length=True))
    assert manifest["counts"]["steps"] == 2 and (run / "sft" / "final").exists()


def test_labels_cover_the_response_only(tiny_models, toy_run):
    _, processor = load_model(tiny_models["student"])
    examples, _ = sft.load_examples(toy_run, sft.SFTConfig(target="cot"))
    batch = build_batch(processor, examples[:3])
    for row, (_, response) in zip(batch["labels"], examples[:3]):
        kept = row[row != -100]
        assert processor.tokenizer.decode(kept) == response + processor.tokenizer.eos_token


def test_a_given_opening_is_read_but_not_learned(tiny_models, toy_run, tmp_path):
    """An example's `given` opens the reply in the input; only the response after it is in the
    labels, with the token that joins them ("sounding" + ".</" + "think"): the model writes that."""
    _, processor = load_model(tiny_models["student"])
    examples, _ = sft.load_examples(toy_run, sft.SFTConfig(target="cot"))
    messages = examples[0][0]
    path = tmp_path / "examples.jsonl"
    path.write_text(json.dumps({"messages": messages, "given": "<think>The drum is sounding.",
                                "response": "</think><answer>drum</answer>"}) + "\n")
    (given_example,), _ = sft.load_examples(tmp_path, sft.SFTConfig(target="examples", examples=str(path)))
    assert given_example == (messages, "</think><answer>drum</answer>", "<think>The drum is sounding.")
    batch = build_batch(processor, [given_example, (messages, "<answer>drum</answer>")])
    tokenizer = processor.tokenizer
    first, second = (labels[labels != -100] for labels in batch["labels"])
    assert tokenizer.decode(first) == ".</think><answer>drum</answer>" + tokenizer.eos_token
    assert tokenizer.decode(second) == "<answer>drum</answer>" + tokenizer.eos_token
    assert "The drum is sounding" in tokenizer.decode(batch["input_ids"][0])
    path.write_text(json.dumps({"messages": messages, "given": ["x"], "response": "y"}) + "\n")
    with pytest.raises(ValueError, match="line 1: `given` must be a string"):
        sft.load_examples(tmp_path, sft.SFTConfig(target="examples", examples=str(path)))


def test_sft_trains_on_the_corpus_it_names(toy_run, tmp_path):
    """Table 2's rows train on verify's ablation corpora (`corpus: corpus-<name>.jsonl`)."""
    run = copy_run(toy_run, tmp_path)
    (run / "corpus-n1.jsonl").write_text("".join((run / "corpus.jsonl").read_text().splitlines(keepends=True)[:2]))
    examples, inputs = sft.load_examples(run, sft.SFTConfig(target="cot", corpus="corpus-n1.jsonl"))
    assert len(examples) == 2 and str(run / "corpus-n1.jsonl") in inputs
    with pytest.raises(ValueError, match="a file name in the run directory"):
        sft.load_examples(run, sft.SFTConfig(target="cot", corpus="../elsewhere.jsonl"))
    with pytest.raises(FileNotFoundError, match="corpus-missing.jsonl"):
        sft.load_examples(run, sft.SFTConfig(target="cot", corpus="corpus-missing.jsonl"))


def test_sft_loss_falls_and_the_checkpoint_evaluates(toy_run, tiny_models, tmp_path):
    run = copy_run(toy_run, tmp_path)
    manifest = sft.main(sft_config(run, tiny_models, steps=24, batch_size=8, save_every=100,
                                   val_samples=str(run / "samples.jsonl"), val_every=12, val_limit=4,
                                   val_max_new_tokens=4))
    counts = manifest["counts"]
    assert counts["last_loss"] < 0.6 * counts["first_loss"]
    assert (run / "sft" / "final" / "adapter_config.json").exists() and (run / "sft" / "best").exists()
    result = evaluate.main(evaluate.EvalConfig(samples=str(run / "samples.jsonl"), out=str(tmp_path / "eval"),
                                               model=ModelConfig(model=str(run / "sft" / "final")), method="zero_shot_cot",
                                               max_new_tokens=16, limit=4, progress=False))
    assert result["count"] == 4


def test_sft_resumes_from_its_last_checkpoint_to_the_same_weights(toy_run, tiny_models, tmp_path):
    whole, cut = copy_run(toy_run, tmp_path / "whole"), copy_run(toy_run, tmp_path / "cut")
    sft.main(sft_config(whole, tiny_models))
    sft.main(sft_config(cut, tiny_models))
    # as if killed after the checkpoint at step 2: later outputs and the manifest are gone
    shutil.rmtree(cut / "sft" / "checkpoint-4")
    shutil.rmtree(cut / "sft" / "final")
    (cut / "manifests" / "sft.json").unlink()
    sft.main(sft_config(cut, tiny_models))
    a = _weights(whole / "sft" / "final")
    b = _weights(cut / "sft" / "final")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)
    rows = list(read_jsonl(cut / "sft" / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_a_damaged_checkpoint_is_passed_over_for_the_one_before(toy_run, tiny_models, tmp_path, capsys):
    whole, cut = copy_run(toy_run, tmp_path / "whole"), copy_run(toy_run, tmp_path / "cut")
    sft.main(sft_config(whole, tiny_models, steps=6))
    sft.main(sft_config(cut, tiny_models, steps=6, keep_checkpoints=3))
    # killed after the checkpoint at step 4, whose optimizer file was then emptied
    shutil.rmtree(cut / "sft" / "checkpoint-6")
    shutil.rmtree(cut / "sft" / "final")
    (cut / "manifests" / "sft.json").unlink()
    (cut / "sft" / "checkpoint-4" / "state" / "optimizer.bin").write_bytes(b"")
    (cut / "sft" / "checkpoint-2" / "state" / "random_states_0.pkl").write_bytes(b"damaged")
    capsys.readouterr()
    sft.main(sft_config(cut, tiny_models, steps=6, keep_checkpoints=3))
    said = capsys.readouterr().out
    assert "checkpoint-4 cannot be loaded (" in said and "resuming from checkpoint-2 instead" in said
    assert "random_states_0.pkl cannot be restored; training resumes, but not bit-identically" in said
    assert (cut / "sft" / "final" / "adapter_model.safetensors").exists()
    assert [r["step"] for r in read_jsonl(cut / "sft" / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_sft_two_seeded_steps_pin_their_losses(toy_run, tiny_models, tmp_path):
    run = copy_run(toy_run, tmp_path)
    sft.main(sft_config(run, tiny_models, steps=2, save_every=100))
    losses = [r["loss"] for r in read_jsonl(run / "sft" / "metrics.jsonl")]
    assert losses == pytest.approx(PINNED_SFT_LOSSES, abs=1e-4)


PINNED_SFT_LOSSES = [6.916433, 6.653126]  # torch 2.13 CPU, seed 0, the tiny student of tiny.build_all(seed=0),
# on the toy world as written with AAC's fast coder (and its ten question types: options shuffled after all)


def two_audio_prompts(tiny_models, tmp_path, clips: list[tuple[float, float]], texts: list[str], student="student"):
    """The tiny student, a backend over it, and one audio question per (seconds, frequency) clip."""
    model, processor = load_model(tiny_models[student])
    wavs = [make_wav(tmp_path / f"clip{i}.wav", seconds=seconds, freq=freq, rate=16_000)
            for i, (seconds, freq) in enumerate(clips)]
    messages = [[{"role": "user", "content": [{"type": "audio", "path": str(w)}, {"type": "text", "text": t}]}]
                for w, t in zip(wavs, texts)]
    return model, HFBackend.from_loaded(model, processor), messages


@pytest.mark.parametrize("student", ["student", "omni"])
def test_each_completion_is_scored_with_its_own_audio(tiny_models, tmp_path, student):
    """The R1-AQA trap: with two prompts of different audio and G completions each, tiling the
    audio with .repeat pairs completion 1 of prompt 0 with the audio of prompt 1 (Qwen2-Audio, and
    Qwen2.5-Omni's thinker, whose encoder takes the clips' valid frames end to end)."""
    model, backend, messages = two_audio_prompts(tiny_models, tmp_path, [(1.0, 200), (1.6, 3000)],
                                                 ["What do you hear?", "Which sound is it, and how loud?"], student)
    model.eval()
    G = 2
    completions = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16], [17, 18, 19, 20]])
    with torch.no_grad():
        batched = completion_logps(model, backend.encode(messages), completions, repeats=G)  # [4, 4]
        for i in range(4):
            alone = completion_logps(model, backend.encode([messages[i // G]]), completions[i:i + 1])
            assert torch.allclose(batched[i], alone[0], atol=1e-5), i
        tiled = dict(backend.encode(messages))  # what R1-AQA does: tokens interleaved, audio tiled
        features = {k: tiled[k].repeat(G, *[1] * (tiled[k].dim() - 1)) for k in ("input_features", "feature_attention_mask")}
        prompt = {k: v.repeat_interleave(G, dim=0) for k, v in tiled.items() if k not in features}
        wrong = completion_logps(model, {**prompt, **features}, completions, repeats=1)
    assert not torch.allclose(wrong[1], batched[1], atol=1e-3)  # completion 1 heard prompt 1's audio


def _full_logits_logps(model, prompt, completions, repeats):
    """The plain path the chunked one replaces: every position's logits, a float32 log-softmax of all."""
    inputs = {k: v.repeat_interleave(repeats, dim=0) for k, v in prompt.items()}
    n = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], completions], dim=1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(completions)], dim=1)
    inputs["position_ids"] = (inputs["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)
    logits = model(**inputs).logits[:, n - 1:-1, :].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, completions.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_chunked_logps_equal_the_full_logits_path_values_and_gradients(tiny_models, tmp_path, checkpointing):
    """With audio, left padding (two prompts of different lengths) and G=2 completions each: the
    log-probs of one row per prompt (grouped attention, 3 tokens at a time through the LM head,
    recomputed in backward) equal the plain path's — every completion its own row with its prompt
    repeated, every position's logits, plain SDPA — and so do the gradients they send to the LM
    head, the decoder and the audio encoder; also when gradient checkpointing recomputes the layers."""
    import copy

    from sightsound.training.student import GROUPED, prepare_for_training

    model, backend, messages = two_audio_prompts(tiny_models, tmp_path, [(0.8, 300), (1.7, 2500)],
                                                 ["Hear?", "Which sound is it, and how loud is it?"])
    model = prepare_for_training(model.train(), gradient_checkpointing=checkpointing)
    plain = copy.deepcopy(model)  # still on SDPA: completion_logps switches `model` to GROUPED
    prompt = dict(backend.encode(messages))
    assert (prompt["attention_mask"][0] == 0).any()  # the shorter prompt is left-padded
    completions = torch.randint(5, 200, (4, 7), generator=torch.Generator().manual_seed(0))
    weights = torch.randn(4, 7, generator=torch.Generator().manual_seed(1))
    results = []
    for net, path in ((model, lambda: completion_logps(model, prompt, completions, repeats=2, rows=3)),
                      (plain, lambda: _full_logits_logps(plain, prompt, completions, 2))):
        net.zero_grad()
        torch.manual_seed(0)  # the same dropout masks, if any
        logps = path()
        (logps * weights).sum().backward()
        grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
        results.append((logps.detach(), grads))
    assert model.get_decoder().config._attn_implementation == GROUPED
    assert plain.get_decoder().config._attn_implementation == "sdpa"
    (chunked, chunked_grads), (full, full_grads) = results
    assert torch.allclose(chunked, full, atol=1e-5)
    assert chunked_grads.keys() == full_grads.keys() and any("audio" in name for name in full_grads)
    for name in full_grads:  # the same up to float32 summation order: relative error of the whole gradient
        error = (chunked_grads[name] - full_grads[name]).norm() / full_grads[name].norm().clamp(min=1e-12)
        assert error < 1e-4, (name, float(error))


def test_grouped_logps_on_a_text_only_decoder(tiny_models):
    """A plain Qwen2ForCausalLM (grouped-query attention: 4 heads, 2 key/value heads), prompts of
    different lengths, G=3: one row per prompt gives the values of one row per completion, and a
    model loaded with eager attention keeps one row per completion."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from sightsound.models import tiny
    from sightsound.training.student import use_grouped_attention

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["student"])
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**tiny._text_config(tokenizer))).eval()
    tokenizer.padding_side = "left"
    prompt = dict(tokenizer(["a short one", "a rather longer prompt than that"], padding=True, return_tensors="pt"))
    completions = torch.randint(5, 200, (6, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = _full_logits_logps(model, prompt, completions, 3)
        assert use_grouped_attention(model)
        assert torch.allclose(completion_logps(model, prompt, completions, repeats=3), expected, atol=1e-5)
        model.get_decoder().config._attn_implementation = "eager"
        assert not use_grouped_attention(model)
        assert torch.allclose(completion_logps(model, prompt, completions, repeats=3), expected, atol=1e-5)


def test_each_prompt_and_clip_runs_once_per_group_in_scoring_and_in_rollouts(tiny_models, tmp_path):
    """The audio encoder and the decoder see B rows, not B x G: when scoring (whose values and
    gradients, audio encoder's included, the test above compares with the path that repeats every
    row) and in the rollouts' prefill, after which `generate` samples what it samples from a prefill
    of every row — the same sequences, greedy and at temperature 1 with the same seed."""
    from sightsound.training.student import sample_groups

    model, backend, messages = two_audio_prompts(tiny_models, tmp_path, [(0.9, 400), (1.5, 2000)], ["Hear?", "Which?"])
    model.eval()
    encoder_rows, decoder_rows = [], []
    tower = next(m for name, m in model.named_modules() if name.endswith("audio_tower"))
    hooks = [tower.conv1.register_forward_pre_hook(lambda module, args: encoder_rows.append(args[0].shape[0])),
             model.get_decoder().register_forward_pre_hook(
                 lambda module, args, kwargs: decoder_rows.append(kwargs["inputs_embeds"].shape), with_kwargs=True)]
    prompt = dict(backend.encode(messages))
    assert (prompt["attention_mask"][0] == 0).any()  # left padding
    completions = torch.randint(5, 200, (8, 5), generator=torch.Generator().manual_seed(0))
    greedy = dict(do_sample=True, top_k=1, max_new_tokens=4)
    sampled = dict(do_sample=True, top_k=None, temperature=1.0, max_new_tokens=6)
    try:
        with torch.no_grad():
            once = completion_logps(model, prompt, completions, repeats=4)
            generated = sample_groups(model, prompt, 4, **greedy)
            torch.manual_seed(3)
            generated_sampled = sample_groups(model, prompt, 4, **sampled)
    finally:
        for hook in hooks:
            hook.remove()
    assert encoder_rows == [2, 2, 2], encoder_rows
    prompt_len = prompt["input_ids"].shape[1]
    assert decoder_rows[0][0] == 2  # scoring: one row per prompt, its 4 completions in it
    assert decoder_rows[1][:2] == (2, prompt_len - 1)  # the rollouts' prefill: each prompt once
    assert decoder_rows[2][:2] == (8, 1)  # then generate goes on from the prompts' last token, G rows each
    with torch.no_grad():
        every_row = _full_logits_logps(model, prompt, completions, 4)
        plain = model.generate(**prompt, num_return_sequences=4, **greedy)
        torch.manual_seed(3)
        plain_sampled = model.generate(**prompt, num_return_sequences=4, **sampled)
    assert torch.allclose(once, every_row, atol=1e-5)
    assert torch.equal(generated, plain) and torch.equal(generated_sampled, plain_sampled)


def test_static_cache_decoding_gives_generates_tokens(tiny_models, tmp_path):
    """GRPO's static-cache decoder (`decoder="static"`) returns what `generate` returns after the
    same grouped prefill: greedy token for token, and sampled (temperature, top-p, suppressed
    tokens) under the same seed; rows that end early are padded and decoding stops when all have
    ended (an EOS chosen so that one row ends at once and others later)."""
    from sightsound.training import decoding
    from sightsound.training.student import sample_groups

    model, backend, messages = two_audio_prompts(tiny_models, tmp_path, [(0.9, 400), (1.5, 2000)], ["Hear?", "Which?"])
    model.eval()
    prompt = dict(backend.encode(messages))
    pad = backend.processor.tokenizer.pad_token_id
    greedy = dict(do_sample=False, max_new_tokens=40, pad_token_id=pad)
    with torch.no_grad():
        plain = sample_groups(model, prompt, 3, **greedy)
        completion = plain[:, prompt["input_ids"].shape[1]:]
        eos = int(completion[0, 0])  # row 0 ends at its first token
        cases = [greedy, dict(greedy, eos_token_id=eos),
                 dict(do_sample=True, temperature=0.7, top_p=0.9, top_k=None, max_new_tokens=40, pad_token_id=pad,
                      suppress_tokens=[int(completion[1, 0])], eos_token_id=eos),
                 dict(do_sample=True, max_new_tokens=40, pad_token_id=pad),  # generate's defaults: top-k 50, T 1
                 dict(do_sample=True, top_k=0, max_new_tokens=40, pad_token_id=pad)]  # GRPO's: the whole distribution
        for settings in cases:
            assert decoding.supported(model, settings) is None
            torch.manual_seed(5)
            expected = sample_groups(model, prompt, 3, **settings)
            torch.manual_seed(5)
            static = sample_groups(model, prompt, 3, decoder="static", **settings)
            assert torch.equal(static, expected), settings
        ended = sample_groups(model, prompt, 3, decoder="static", **cases[1])
    assert ended.shape[1] < plain.shape[1] or (ended[:, prompt["input_ids"].shape[1]:] == eos).any()
    assert decoding.supported(model, dict(greedy, repetition_penalty=1.2)) == "repetition_penalty=1.2"
    warpers = [type(p).__name__ for p in decoding.logits_processors(decoding.settings(model, cases[3]))]
    assert warpers == ["TopKLogitsWarper"] and not decoding.logits_processors(decoding.settings(model, cases[4]))
    with pytest.raises(ValueError, match="decoder must be one of"):
        sample_groups(model, prompt, 3, decoder="fast", **greedy)


def test_completion_mask_runs_through_the_first_eos():
    ids = torch.tensor([[4, 5, 2, 7, 2], [4, 5, 6, 7, 8], [2, 0, 0, 0, 0]])
    assert grpo.completion_mask(ids, [2]).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def test_grpo_runs_logs_and_saves_a_loadable_model(toy_run, tiny_models, tmp_path):
    run = copy_run(toy_run, tmp_path)
    sft.main(sft_config(run, tiny_models, steps=2, save_every=100))
    manifest = grpo.main(grpo.GRPOConfig(out=str(run), model=str(run / "sft" / "final"), steps=2, group_size=4,
                                         prompts_per_step=2, lr=1e-4, max_completion_tokens=12, save_every=1,
                                         log_completions_every=2, decoder="static", progress=False))
    logged = list(read_jsonl(run / "grpo" / "completions.jsonl"))  # step 2 only: 2 prompts x G=4
    assert [r["step"] for r in logged] == [2] * 8 and len({r["id"] for r in logged}) == 8
    assert set(logged[0]["rewards"]) == {"accuracy", "format"} and abs(sum(r["advantage"] for r in logged[:4])) < 1e-4
    rows = list(read_jsonl(run / "grpo" / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward", "reward_accuracy", "reward_format", "kl", "clip_fraction", "zero_variance_groups",
                "completion_length", "loss"):
        assert key in rows[0]
    assert manifest["counts"]["steps"] == 2 and (run / "grpo" / "tensorboard").exists()
    backend = load_backend(ModelConfig(model=str(run / "grpo" / "final")))
    assert type(backend.model).__name__ == "Qwen2AudioForConditionalGeneration"
    assert read_manifest(run, "grpo")["counts"]["prompts"] == 16


def test_rollouts_decode_compiled_on_a_gpu_static_on_a_cpu_and_with_generate_when_sharded():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    def accelerator(kind, device="cuda", zero_stage=None):
        plugin = SimpleNamespace(zero_stage=zero_stage, deepspeed_config={}) if zero_stage else None
        return SimpleNamespace(distributed_type=kind, device=torch.device(device), num_processes=2,
                               state=SimpleNamespace(deepspeed_plugin=plugin))

    auto = grpo.GRPOConfig()
    assert grpo.rollout_decoder(auto, accelerator(DistributedType.MULTI_GPU)) == "compiled"
    assert grpo.rollout_decoder(auto, accelerator(DistributedType.NO, "cpu")) == "static"
    assert grpo.rollout_decoder(auto, accelerator(DistributedType.DEEPSPEED, zero_stage=2)) == "compiled"
    assert grpo.rollout_decoder(auto, accelerator(DistributedType.DEEPSPEED, zero_stage=3)) == "generate"
    assert grpo.rollout_decoder(grpo.GRPOConfig(decoder="generate"), accelerator(DistributedType.NO)) == "generate"
    with pytest.raises(ConfigError, match="sharded"):
        grpo.rollout_decoder(grpo.GRPOConfig(decoder="compiled"), accelerator(DistributedType.FSDP))
    with pytest.raises(ConfigError, match="grpo.decoder must be one of"):
        grpo.GRPOConfig(decoder="vllm")


def format_rate(model_dir, samples) -> float:
    """The share of <think>…</think><answer>…</answer> replies among 8 samples for each of 8 prompts."""
    from sightsound.models import Request, Sampling

    model, processor = load_model(model_dir)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    backend = HFBackend.from_loaded(model.eval(), processor)
    requests = [Request(s.id, prompts.student_turn(s, "zero_shot_cot", "letter")) for s in samples[:8]]
    texts = [t for g in backend.generate(requests, Sampling(n=8, temperature=1.0, max_new_tokens=24, seed=123))
             for t in g.texts]
    return sum(map(rl.format_reward, texts)) / len(texts)


def test_grpo_raises_the_format_reward(toy_run, tiny_models, tmp_path):
    """A student SFT'd until about half its replies have the format; GRPO on the format reward alone
    (LoRA, 30 steps, G=8) makes more of them have it."""
    run = copy_run(toy_run, tmp_path)
    sft.main(sft_config(run, tiny_models, steps=70, batch_size=8, save_every=1000, merge=True))
    samples = list(read_jsonl(run / "samples.jsonl", Sample))
    before = format_rate(run / "sft" / "merged", samples)
    assert 0.1 < before < 0.9, before  # room to improve, and something to reinforce
    grpo.main(grpo.GRPOConfig(out=str(run), model=str(run / "sft" / "merged"), lora=LoraConfig(enabled=True),
                              rewards={"format": 1.0}, beta=0.0, group_size=8, prompts_per_step=4, lr=3e-3,
                              steps=30, max_completion_tokens=24, save_every=1000, progress=False))
    rewards = [r["reward_format"] for r in read_jsonl(run / "grpo" / "metrics.jsonl")]
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.05, rewards
    assert format_rate(run / "grpo" / "final", samples) > before + 0.05


def test_the_omni_thinker_trains_with_sft_and_grpo(toy_run, tiny_models, tmp_path):
    """Qwen2.5-Omni's thinker as the student: LoRA SFT lowers its loss, GRPO runs on the SFT adapter,
    and what GRPO saves loads back as the thinker and evaluates."""
    run = copy_run(toy_run, tmp_path)
    manifest = sft.main(sft_config(run, tiny_models, model=str(tiny_models["omni"]), steps=24, batch_size=8,
                                   save_every=100))
    assert manifest["counts"]["last_loss"] < 0.6 * manifest["counts"]["first_loss"]
    manifest = grpo.main(grpo.GRPOConfig(out=str(run), model=str(run / "sft" / "final"), steps=2, group_size=4,
                                         prompts_per_step=2, lr=1e-4, max_completion_tokens=12, save_every=100,
                                         progress=False))
    assert manifest["counts"]["steps"] == 2
    rows = list(read_jsonl(run / "grpo" / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [1, 2] and all(r["completion_length"] > 0 for r in rows)
    backend = load_backend(ModelConfig(model=str(run / "grpo" / "final")))
    assert type(backend.model.get_base_model() if hasattr(backend.model, "get_base_model") else backend.model
                ).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    result = evaluate.main(evaluate.EvalConfig(samples=str(run / "samples.jsonl"), out=str(tmp_path / "eval"),
                                               model=ModelConfig(model=str(run / "grpo" / "final")),
                                               method="zero_shot_cot", max_new_tokens=8, limit=4, progress=False))
    assert result["count"] == 4


def test_sft_replay_mixes_in_its_share_of_examples(tmp_path):
    """`replay` pairs make up `replay_share` of the examples, drawn over again when too few, seeded."""
    def pairs(path, n, word):
        path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"}],
                                            "response": f"{word}{i}"}) + "\n" for i in range(n)))
        return str(path)

    cfg = sft.SFTConfig(target="examples", examples=pairs(tmp_path / "own.jsonl", 30, "t"),
                        replay=pairs(tmp_path / "replay.jsonl", 4, "r"), replay_share=0.25)
    examples, inputs = sft.load_examples(tmp_path, cfg)
    assert len(examples) == 40 and sum(r.startswith("r") for _, r in examples) == 10
    assert set(inputs) == {cfg.examples, cfg.replay}
    assert sft.load_examples(tmp_path, cfg)[0] == examples  # the same draw every time
    with pytest.raises(ConfigError, match="replay_share"):
        sft.load_examples(tmp_path, sft.SFTConfig(target="examples", examples=cfg.examples, replay=cfg.replay,
                                                  replay_share=1.0))


def test_a_tracker_that_cannot_start_stops_training_unless_optional(toy_run, tiny_models, tmp_path, capsys):
    from sightsound.config import ConfigError

    run = copy_run(toy_run, tmp_path)
    with pytest.raises(ConfigError, match="report_to 'no_such_tracker': the no_such_tracker package is not installed"):
        sft.main(sft_config(run, tiny_models, steps=1, report_to=["tensorboard", "no_such_tracker"]))
    assert not (run / "sft").exists()  # stopped before anything was written
    sft.main(sft_config(run, tiny_models, steps=1, report_to=["tensorboard", "no_such_tracker"], trackers_optional=True))
    assert "no_such_tracker is not installed; training without it" in capsys.readouterr().out
    assert list((run / "sft" / "tensorboard").rglob("events.out.tfevents*"))  # the installed one still logs
