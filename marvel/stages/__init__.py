"""The stages of a run, in order: dataset (and collection), pretraining, the aligned start
(VPA), finetuning and evaluation."""
