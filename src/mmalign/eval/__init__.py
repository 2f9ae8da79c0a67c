"""Evaluation: POPE, VQA exact match, multiple choice under CircularEval, CHAIR.

Pure metrics and parses live in one module per benchmark (pope, vqa, mc, chair); the task
registry (`mmalign.eval.tasks`) says how each is asked and scored; `mmalign.eval.run.evaluate`
runs a Generator over a world's benchmarks with resume, and `metrics_from_predictions`
re-scores a prediction file without the model.
"""
