"""The `lines` likelihood head's inputs and head, on tensors: each line's token statistics,
their packing (NaN past a text's last line) and a head that reads any number of lines."""

from __future__ import annotations

import pytest
import torch

from mmalign.models.reward import LINE_STATISTICS, LineHead, cat_padded, line_statistics, pack_lines


def test_lines_end_at_newline_tokens_and_the_rest_is_the_last_line():
    logps = torch.tensor([-1.0, -5.0, -2.0, -0.5, -3.0, -4.0, -0.25])
    ends = torch.tensor([False, False, True, False, True, False, False])
    rows = line_statistics(logps, ends)
    assert len(rows) == 3 and all(len(r) == len(LINE_STATISTICS) for r in rows)
    # tokens 0-2: sum, mean, min, count, min after the first, last, median after the first
    assert rows[0] == pytest.approx([-8.0, -8.0 / 3, -5.0, 3, -5.0, -2.0, -2.0])
    assert rows[1] == pytest.approx([-3.5, -1.75, -3.0, 2, -3.0, -3.0, -3.0])
    assert rows[2] == pytest.approx([-4.25, -2.125, -4.0, 2, -0.25, -0.25, -0.25])
    # a text that ends with its newline has no empty line after it; a one-token line
    assert len(line_statistics(logps[:5], ends[:5])) == 2
    assert line_statistics(torch.tensor([-2.0]), torch.tensor([False])) == [
        pytest.approx([-2.0, -2.0, -2.0, 1, -2.0, -2.0, -2.0])]


def test_packing_pads_missing_lines_and_batches_of_other_widths():
    rows = [[[1.0] * 7, [2.0] * 7], [[3.0] * 7]]
    packed = pack_lines(rows)
    assert packed.shape == (2, 14)
    assert packed[1, 7:].isnan().all() and not packed[0].isnan().any()
    wide = torch.cat([torch.zeros(2, 1), packed], 1)
    narrow = torch.cat([torch.ones(1, 1), pack_lines([[[4.0] * 7]])], 1)
    both = cat_padded([narrow, wide])
    assert both.shape == (3, 15) and both[0, 8:].isnan().all()


def test_the_head_is_the_mean_over_lines_plus_the_texts_term_whatever_the_padding():
    head = LineHead(hidden=4, n_features=1)
    head.reset(torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    texts = [torch.randn(n, 7, generator=gen) for n in (1, 3, 2)]
    feats = cat_padded([torch.cat([torch.tensor([[0.5 * i]]), pack_lines([t.tolist()])], 1)
                        for i, t in enumerate(texts)])
    head.standardise(feats)
    there = torch.cat(texts)
    torch.testing.assert_close(head.line_mean, there.mean(0))
    assert float(head.feature_mean[1]) == pytest.approx(2.0)  # the mean line count
    with torch.no_grad():
        scores = head(feats)
        for i, t in enumerate(texts):
            line = head.line((t - head.line_mean) / head.line_std).squeeze(-1).mean()
            whole = (torch.tensor([0.5 * i, len(t)]) - head.feature_mean) / head.feature_std
            assert float(scores[i]) == pytest.approx(float(line + head.mlp(whole)[0]), abs=1e-5)
            # alone, or padded to more lines, the same score
            alone = torch.cat([torch.tensor([[0.5 * i]]), pack_lines([t.tolist()])], 1)
            assert float(head(alone)[0]) == pytest.approx(float(scores[i]), abs=1e-5)
    with pytest.raises(ValueError, match="every text to have a line"):
        head(torch.cat([torch.zeros(1, 1), pack_lines([[]] + [[[0.0] * 7]])[:1]], 1))
