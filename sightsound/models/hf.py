"""Local Hugging Face backend: Qwen2-Audio, Qwen2.5-VL and Qwen2.5-Omni (thinker) checkpoints.

    backend = HFBackend(ModelConfig(backend="hf", model="Qwen/Qwen2-Audio-7B-Instruct", dtype="bfloat16",
                                    device_map="auto"))
    generations = backend.generate(requests, Sampling(n=8, temperature=1.0))
    p_yes = backend.yes_probability(requests)   # P("yes") vs P("no") at the reply's first token

Checkpoints (full, or a LoRA adapter on its base) load through `models.loading`, as in training.
Prompts are rendered with the checkpoint's own chat template and batched with left padding. Video
frames go to the model as a video where the processor can take one (it needs torchvision),
otherwise as a sequence of images (`frames_as` in the config picks; both paths are kept).
"""

from __future__ import annotations

from sightsound.models.backend import Generation, ModelConfig, Request, Sampling
from sightsound.models.loading import encode, frames_as_images, load_model


class HFBackend:
    batch_dependent_draws = True  # one seed per batch: a sample's draws depend on what it is batched with
    def __init__(self, cfg: ModelConfig):
        model, processor = load_model(cfg.model, cfg.dtype, cfg.device_map, cfg.trust_remote_code)
        self._hold(model.eval(), processor, cfg)

    @classmethod
    def from_loaded(cls, model, processor, cfg: ModelConfig | None = None) -> "HFBackend":
        """A backend over a model already in memory (a student in training, for validation)."""
        backend = cls.__new__(cls)
        backend._hold(model, processor, cfg or ModelConfig())
        return backend

    def _hold(self, model, processor, cfg: ModelConfig) -> None:
        self.cfg, self.model, self.processor, self.tokenizer = cfg, model, processor, processor.tokenizer
        self.video_ok = getattr(processor, "video_processor", None) is not None
        self.frames_as = cfg.frames_as if cfg.frames_as != "auto" else ("video" if self.video_ok else "images")
        if self.frames_as == "video" and not self.video_ok:
            raise ValueError(f"{cfg.model}: frames_as=video needs the video processor, which needs "
                             "torchvision; install it or use frames_as=images")

    @property
    def device(self):
        return self.model.device

    def encode(self, messages_batch: list[list[dict]], add_generation_prompt: bool = True):
        """Render, tokenize and featurize a batch of conversations (left-padded tensors on the model's device)."""
        if self.frames_as == "images":
            messages_batch = [frames_as_images(messages) for messages in messages_batch]
        # left padding: generation appends on the right
        return encode(self.processor, messages_batch, "left", add_generation_prompt=add_generation_prompt).to(self.device)

    # --- generation -------------------------------------------------------------------------------

    def generate(self, requests: list[Request], sampling: Sampling) -> list[Generation]:
        results: list[Generation] = []
        for start in range(0, len(requests), self.cfg.batch_size):
            batch = requests[start:start + self.cfg.batch_size]
            try:
                results += self._generate_batch(batch, sampling)
            except Exception as exc:  # find and record the request(s) at fault; keep the others
                if len(batch) == 1:
                    results.append(Generation(batch[0].id, [], f"{type(exc).__name__}: {exc}"))
                else:
                    for request in batch:
                        results += self.generate([request], sampling)
        return results

    def _generate_batch(self, batch: list[Request], sampling: Sampling) -> list[Generation]:
        import torch

        inputs = self.encode([r.messages for r in batch])
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        greedy = sampling.temperature <= 0
        with torch.no_grad():
            output = self.model.generate(
                **inputs, max_new_tokens=sampling.max_new_tokens, num_return_sequences=sampling.n,
                do_sample=not greedy, temperature=None if greedy else sampling.temperature,
                top_p=None if greedy else sampling.top_p, top_k=None if greedy else sampling.top_k,
                pad_token_id=self.tokenizer.pad_token_id)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]  # [B*n, T_new]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        n = sampling.n
        return [Generation(r.id, texts[i * n:(i + 1) * n]) for i, r in enumerate(batch)]

    def yes_probability(self, requests: list[Request]) -> list[float | None]:
        """P(yes) / (P(yes) + P(no)) for the first token of the reply, read from the logits."""
        import torch

        yes = _first_token_ids(self.tokenizer, ["yes", "Yes", " yes", " Yes", "YES"])
        no = _first_token_ids(self.tokenizer, ["no", "No", " no", " No", "NO"])
        scores: list[float | None] = []
        for start in range(0, len(requests), self.cfg.batch_size):
            batch = requests[start:start + self.cfg.batch_size]
            inputs = self.encode([r.messages for r in batch])
            with torch.no_grad():
                logits = self.model(**inputs).logits[:, -1, :].float()  # [B, V]; left padding: last is real
            probs = logits.softmax(-1)
            p_yes, p_no = probs[:, yes].sum(-1), probs[:, no].sum(-1)
            scores += (p_yes / (p_yes + p_no)).tolist()
        return scores


def _first_token_ids(tokenizer, words: list[str]) -> list[int]:
    ids = {tokenizer.encode(word, add_special_tokens=False)[0] for word in words}
    return sorted(ids)
