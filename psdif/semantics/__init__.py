"""Semantics: Cityscapes conventions, the DeepLabv3+ pseudo-labeller and in-pipeline teacher, label storage and the boundary sets B_t of the metric loss."""
