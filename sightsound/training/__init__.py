"""Training the student: LoRA, batches and log-probs with its own audio (`student`), and the loop
SFT and GRPO share (`loop`)."""
