"""TRL's SFTTrainer on `sightsound export --format trl` rows, with their audio.

TRL's SFTTrainer reads text and images; given our rows as they are it would tokenize the prompt and
completion and leave the `audio` column unused — training an audio model without its audio. Its
documented way in for another modality is a collator of its own over the untouched rows
(`dataset_kwargs={"skip_prepare_dataset": True}`, `remove_unused_columns=False`). This is that
collator: it builds each batch exactly as `sightsound sft` does (`training.student.build_batch`:
the clip's audio features, the prompt, and labels on the completion alone).

    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer
    from sightsound.models.loading import load_model
    from sightsound.training.trl_audio import AudioCollator

    model, processor = load_model("Qwen/Qwen2-Audio-7B-Instruct")
    rows = load_dataset("json", data_files="runs/demo/export/trl-sft.jsonl")["train"]
    args = SFTConfig(output_dir="out", remove_unused_columns=False,
                     dataset_kwargs={"skip_prepare_dataset": True})
    SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=processor.tokenizer,
               data_collator=AudioCollator(processor)).train()

TRL's GRPOTrainer passes images to the model but no audio, so GRPO rows are exported for ms-swift
(`--format swift --what grpo`), not for TRL.
"""

from __future__ import annotations

from sightsound import prompts
from sightsound.training.student import build_batch


class AudioCollator:
    """Rows of a TRL export (`prompt`, `completion`, `audio`) → the model's inputs and labels."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, rows: list[dict]) -> dict:
        examples = []
        for number, row in enumerate(rows):
            missing = [key for key in ("prompt", "completion", "audio") if not row.get(key)]
            if missing:
                raise ValueError(f"TRL row {number}: missing {', '.join(missing)} (rows of "
                                 "`sightsound export --format trl --what sft` have them)")
            examples.append((prompts.user_turn(row["prompt"][-1]["content"], audio=row["audio"]),
                             row["completion"][-1]["content"]))
        return dict(build_batch(self.processor, examples))
