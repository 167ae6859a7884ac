"""DR-GAN's networks, loss terms, ω fusion, recognition protocols and pose handling,
checked against hand counts and hand-computed values (no training, no engine)."""

from __future__ import annotations

import math

import pytest
import torch

from gancore.parts import DataInfo
from gancore_drgan import protocol
from gancore_drgan.fusion import drop_confidences, fuse, group_count, local_groups
from gancore_drgan.losses import IdentityLoss, PoseLoss, SyntheticLoss
from gancore_drgan.model import DRGANDecoder, DRGANDiscriminator, DRGANEncoder, one_hot_pose
from gancore_drgan.poses import PoseError, frontal_pose, parse_yaws, pose_yaws, standard_yaws

#: the CVPR protocol's Multi-PIE setting: 200 training identities, 9 poses, 96 px.
INFO96 = DataInfo(resolution=96, label_classes={"identity": 200, "pose": 9})


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------------------------------------
# networks at the paper's 96 px


def test_shapes_at_96px_follow_table_1() -> None:
    torch.manual_seed(0)
    E, G, D = DRGANEncoder(info=INFO96), DRGANDecoder(info=INFO96), DRGANDiscriminator(info=INFO96)
    x = torch.rand(2, 3, 96, 96) * 2 - 1
    maps = E.trunk(x, features=True)[1]
    # each block's output: 96x96x64, 48x48x128, 24x24x192, 12x12x256, 6x6x320 (then the 6x6 average pool)
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 96, 96), (128, 48, 48), (192, 24, 24), (256, 12, 12), (320, 6, 6)]
    e = E(x)
    assert e.f.shape == (2, 320) and torch.equal(e.omega, torch.ones(2))
    y = G(e.f, torch.tensor([0, 8]), torch.rand(2, 50) * 2 - 1)
    assert y.shape == (2, 3, 96, 96) and y.abs().max() <= 1  # tanh
    out = D(y)
    assert out.logits.shape == (2, 201) and out.extra["pose"].shape == (2, 9) and D.synthetic_class == 200
    # the decoder's FConv maps: FC -> 6x6x320, then 160, 256 (12), 128, 192 (24), 96, 128 (48), 64, 64 (96), 32, 3
    sizes, h = [], G.fc_norm(G.fc(torch.zeros(1, 379)).view(1, 320, 6, 6))
    for layer in G.layers:
        h = layer(h)
        if isinstance(layer, torch.nn.ConvTranspose2d):
            sizes.append((h.shape[1], h.shape[2]))
    assert sizes == [(160, 6), (256, 12), (128, 12), (192, 24), (96, 24), (128, 48), (64, 48), (64, 96), (32, 96), (3, 96)]


def test_parameter_counts_at_96px_match_hand_counts() -> None:
    # G_enc / D trunk: 3x3 convs without bias (batch norm follows) k*k*cin*cout, + BN 2*cout:
    #   Conv11 3->32:     864 +  64 =     928     Conv12 32->64:   18,432 + 128 =  18,560
    #   Conv21 64->64:  36,864 + 128 =  36,992    Conv22 64->128:  73,728 + 256 =  73,984
    #   Conv31 128->96: 110,592 + 192 = 110,784   Conv32 96->192: 165,888 + 384 = 166,272
    #   Conv41 192->128: 221,184 + 256 = 221,440  Conv42 128->256: 294,912 + 512 = 295,424
    #   Conv51 256->160: 368,640 + 320 = 368,960  Conv52 160->320: 460,800 + 640 = 461,440
    trunk = 928 + 18_560 + 36_992 + 73_984 + 110_784 + 166_272 + 221_440 + 295_424 + 368_960 + 461_440
    assert trunk == 1_754_784
    assert n_params(DRGANEncoder(info=INFO96)) == trunk
    # multi-image: Conv52 160->321 (9*160*321 = 462,240, BN 642) instead of 160->320
    assert n_params(DRGANEncoder(info=INFO96, confidence=True)) == trunk - 461_440 + 462_240 + 642 == 1_756_226
    # TPAMI: four 3x3 stride-2 convs c->c + BN instead of max-pools (c = 64, 128, 192, 256)
    strided = (36_864 + 128) + (147_456 + 256) + (331_776 + 384) + (589_824 + 512)
    assert n_params(DRGANEncoder(info=INFO96, downsample="conv")) == trunk + strided == 2_861_984
    # D: the trunk + one FC 320 -> N_d + 1 + N_p = 210 logits (with bias)
    assert n_params(DRGANDiscriminator(info=INFO96)) == trunk + 320 * 210 + 210 == 1_822_194
    # separate real/fake unit: N_d + N_p + 1 logits too, so the same count
    assert n_params(DRGANDiscriminator(info=INFO96, realfake="separate")) == 1_822_194
    # G_dec: FC (320 + 9 + 50 = 379) -> 6*6*320 = 11,520 without bias: 4,366,080, BN 640;
    #   FConv11 320->160: 460,800 + 320   FConv12 160->256: 368,640 + 512   FConv21 256->128: 294,912 + 256
    #   FConv22 128->192: 221,184 + 384   FConv31 192->96: 165,888 + 192    FConv32 96->128: 110,592 + 256
    #   FConv41 128->64: 73,728 + 128     FConv42 64->64: 36,864 + 128      FConv51 64->32: 18,432 + 64
    #   FConv52 32->3 with bias: 864 + 3
    dec = (4_366_080 + 640 + 460_800 + 320 + 368_640 + 512 + 294_912 + 256 + 221_184 + 384 + 165_888 + 192
           + 110_592 + 256 + 73_728 + 128 + 36_864 + 128 + 18_432 + 64 + 864 + 3)
    assert dec == 6_120_867
    assert n_params(DRGANDecoder(info=INFO96)) == dec
    # the grayscale output of CVPR Table 1: FConv52 32->1 = 288 + 1
    assert n_params(DRGANDecoder(info=INFO96, channels=1)) == dec - 867 + 289


def test_weights_start_from_n_0_002() -> None:
    torch.manual_seed(0)
    G = DRGANDecoder(info=INFO96)
    w = G.fc.weight
    w = w.detach()
    assert abs(float(w.mean())) < 1e-3 and float(w.std()) == pytest.approx(0.02, rel=0.02)
    assert float(G.layers[-2].bias.detach().abs().max()) == 0.0


def test_other_resolutions_widths_and_options() -> None:
    info = DataInfo(resolution=48, label_classes={"identity": 10, "pose": 13})
    E = DRGANEncoder(info=info, width=8, confidence=True, downsample="conv")
    e = E(torch.zeros(3, 3, 48, 48))
    assert e.f.shape == (3, 80) and e.omega.shape == (3,) and bool(((e.omega > 0) & (e.omega < 1)).all())
    G = DRGANDecoder(info=info, width=8, z_dim=20, channels=1)
    assert G(e.f, torch.tensor([0, 6, 12])).shape == (3, 1, 48, 48)  # z = None decodes with z = 0
    D = DRGANDiscriminator(info=info, width=8, realfake="separate", channels=1, dropout=0.4)
    out = D(torch.zeros(3, 1, 48, 48))
    assert out.logits.shape == (3, 10) and out.extra["realfake"].shape == (3,) and out.extra["pose"].shape == (3, 13)
    with pytest.raises(ValueError, match="synthetic"):
        D.synthetic_class
    with pytest.raises(ValueError, match="multiple of 16"):
        DRGANEncoder(info=DataInfo(resolution=40))
    with pytest.raises(KeyError, match="'pose'"):
        DRGANDecoder(info=DataInfo(resolution=48, label_classes={"identity": 3}))
    with pytest.raises(ValueError, match="0..12"):
        G(e.f, torch.tensor([0, 6, 13]))
    assert one_hot_pose(torch.tensor([2]), 4).tolist() == [[0, 0, 1, 0]]


def test_decoder_depends_on_pose_code_and_noise() -> None:
    torch.manual_seed(0)
    info = DataInfo(resolution=16, label_classes={"identity": 4, "pose": 3})
    G = DRGANDecoder(info=info, width=4).eval()
    f = torch.randn(1, 40)
    a, b = G(f, torch.tensor([0])), G(f, torch.tensor([2]))
    # (an untrained N(0, 0.02) net in eval mode has tiny outputs: compare relatively)
    assert not torch.allclose(a, b, rtol=1e-3, atol=0)
    assert not torch.allclose(a, G(f, torch.tensor([0]), torch.ones(1, 50)), rtol=1e-3, atol=0)
    assert torch.equal(a, G(f, torch.tensor([0]), torch.zeros(1, 50)))


# ---------------------------------------------------------------------------------------------
# loss terms


def test_identity_and_pose_terms_match_hand_values() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    # row 0: -log(3 / 4) = ln(4/3); row 1: -log(1/2) = ln 2
    ctx = {"logits": logits, "target": torch.tensor([1, 0])}
    assert IdentityLoss()(ctx).item() == pytest.approx((math.log(4 / 3) + math.log(2)) / 2)
    assert PoseLoss(weight=3.0)(ctx).item() == pytest.approx(3 * (math.log(4 / 3) + math.log(2)) / 2)
    # missing labels (-1) leave the mean; none labelled gives 0, not NaN
    assert IdentityLoss()({"logits": logits, "target": torch.tensor([1, -1])}).item() == pytest.approx(math.log(4 / 3))
    assert IdentityLoss()({"logits": logits, "target": torch.tensor([-1, -1])}).item() == 0.0
    # renamed inputs, as the schedule uses them
    term = IdentityLoss(inputs={"logits": "d_real_id_logits", "target": "identity"})
    assert term({"d_real_id_logits": logits, "identity": torch.tensor([0, 1])}).item() == pytest.approx(
        (math.log(4) + math.log(2)) / 2)
    with pytest.raises(ValueError, match="logits"):
        IdentityLoss()({"logits": torch.zeros(3), "target": torch.zeros(3)})


def test_synthetic_term_is_minus_log_of_the_last_class() -> None:
    # softmax of (0, 0, ln 2) = (1/4, 1/4, 1/2): -log(1/2) = ln 2; of (ln 3, 0, 0): last = 1/5
    logits = torch.tensor([[0.0, 0.0, math.log(2.0)], [math.log(3.0), 0.0, 0.0]])
    assert SyntheticLoss()({"logits": logits}).item() == pytest.approx((math.log(2) + math.log(5)) / 2)


# ---------------------------------------------------------------------------------------------
# ω fusion


def test_fusion_weights_features_by_confidence() -> None:
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    omega = torch.tensor([1.0, 3.0, 0.5])
    group = torch.tensor([0, 0, 1])
    out = fuse(f, omega, group, 2)
    # group 0: (1*(1,0) + 3*(0,1)) / 4 = (0.25, 0.75); group 1: one image -> its own f
    assert torch.allclose(out, torch.tensor([[0.25, 0.75], [2.0, 2.0]]))
    # equal confidences: the plain mean
    assert torch.allclose(fuse(f[:2], torch.ones(2), torch.zeros(2, dtype=torch.long), 1), torch.tensor([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="omega"):
        fuse(f, omega[:2], group, 2)


def test_fusion_of_one_image_equals_the_single_image_feature() -> None:
    torch.manual_seed(0)
    info = DataInfo(resolution=16, label_classes={"identity": 4, "pose": 3})
    E = DRGANEncoder(info=info, width=4, confidence=True).eval()
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    e = E(x)
    fused = fuse(e.f, e.omega, torch.arange(5), 5)  # five groups of n = 1
    assert torch.allclose(fused, e.f, rtol=1e-6, atol=1e-7)


def test_fusion_is_invariant_to_the_order_of_images() -> None:
    torch.manual_seed(0)
    f, omega = torch.randn(12, 8), torch.rand(12)
    group = torch.arange(3).repeat_interleave(4)
    ref = fuse(f, omega, group, 3)
    for _ in range(5):
        perm = torch.randperm(12)
        assert torch.allclose(fuse(f[perm], omega[perm], group[perm], 3), ref, atol=1e-6)


def test_confidence_dropout_never_drops_a_whole_group() -> None:
    g = torch.Generator().manual_seed(0)
    group = torch.arange(200).repeat_interleave(6)  # 200 groups of 6
    omega = torch.rand(1200, generator=g) * 0.9 + 0.1
    kept_share = []
    for p in (0.5, 0.9, 0.999):
        for _ in range(20):
            out = drop_confidences(omega, group, 200, p, generator=g)
            alive = torch.zeros(200).index_add(0, group, (out > 0).float())
            assert bool((alive >= 1).all()), f"a group lost every image at p = {p}"
            assert bool(((out == 0) | (out == omega)).all())  # dropped or untouched, never rescaled
            kept_share.append((p, float((out > 0).float().mean())))
    # at p = 0.5 about half the images stay (plus the few rescued groups)
    half = [s for p, s in kept_share if p == 0.5]
    assert 0.47 < sum(half) / len(half) < 0.55
    assert torch.equal(drop_confidences(omega, group, 200, 0.0), omega)
    with pytest.raises(ValueError, match="dropout"):
        drop_confidences(omega, group, 200, 1.0)


def test_group_indices_are_renumbered_per_micro_batch() -> None:
    g = torch.tensor([3, 3, 4, 4, 5, 5])
    assert local_groups(g).tolist() == [0, 0, 1, 1, 2, 2] and group_count(local_groups(g)) == 3


# ---------------------------------------------------------------------------------------------
# recognition protocols on hand-made data


def test_rank1_on_a_tiny_gallery_with_a_known_answer() -> None:
    # gallery: identities 7, 8, 9 along the three axes
    gallery = torch.eye(3) * torch.tensor([[2.0], [1.0], [5.0]])  # lengths do not matter (cosine)
    g_ids = torch.tensor([7, 8, 9])
    probes = torch.tensor([
        [0.9, 0.1, 0.0],  # nearest 7: right
        [0.1, 0.8, 0.3],  # nearest 8: right
        [0.6, 0.0, 0.5],  # nearest 7, but it is 9: wrong
        [0.0, 0.0, 1.0],  # 9: right
        [0.0, 1.0, 0.0],  # 8, but labelled 6 (not in the gallery): wrong
    ])
    p_ids = torch.tensor([7, 8, 9, 9, 6])
    assert protocol.rank1(gallery, g_ids, probes, p_ids).tolist() == [True, True, False, True, False]
    assert protocol.cosine_matrix(probes[3:4], gallery).tolist() == [[0.0, 0.0, 1.0]]
    with pytest.raises(ValueError, match="empty"):
        protocol.rank1(gallery[:0], g_ids[:0], probes, p_ids)


def test_verification_numbers_on_hand_made_scores() -> None:
    scores = torch.tensor([0.9, 0.4, 0.5, 0.1])
    same = torch.tensor([1, 1, 0, 0])
    # genuine 0.9, 0.4 vs impostor 0.5, 0.1: 3 of the 4 genuine-impostor orderings are right
    assert protocol.auc(scores, same) == pytest.approx(0.75)
    assert protocol.auc(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])) == pytest.approx(0.5)  # a tie counts half
    # threshold 0.5: accepts 0.9 and 0.5 -> one false accept (1/2) and one false reject (1/2)
    assert protocol.accuracy_at(scores, same, 0.5) == pytest.approx(0.5)
    t, acc = protocol.best_threshold(scores, same)
    assert acc == pytest.approx(0.75) and (0.1 < t <= 0.4 or 0.5 < t <= 0.9)
    e, _ = protocol.eer(torch.tensor([0.9, 0.8, 0.3, 0.2]), torch.tensor([1, 1, 0, 0]))
    assert e == 0.0  # separable
    e, _ = protocol.eer(scores, same)
    assert e == pytest.approx(0.5)  # at 0.5 or 0.9: FAR = FRR = 1/2
    with pytest.raises(ValueError, match="genuine"):
        protocol.auc(scores, torch.ones(4))


def test_verification_by_sorting_equals_the_pairwise_definitions() -> None:
    # the sorted-search AUC and error rates against their definitions, written out pairwise,
    # on scores with many ties (rounded) and unequal genuine/impostor counts
    gen = torch.Generator().manual_seed(3)
    scores = (torch.rand(700, generator=gen) * 20).round() / 20
    same = torch.rand(700, generator=gen) < 0.3
    pos, neg = scores[same].double(), scores[~same].double()
    want_auc = ((pos[:, None] > neg[None]).double().mean() + 0.5 * (pos[:, None] == neg[None]).double().mean()).item()
    assert protocol.auc(scores, same) == pytest.approx(want_auc, abs=1e-12)
    t = torch.cat([torch.unique(scores.double()), torch.tensor([2.0])])
    far, frr = protocol._rates(scores.double(), same, t)
    accept = scores.double()[None] >= t[:, None]
    assert torch.allclose(far, (accept & ~same[None]).double().sum(1) / (~same).sum())
    assert torch.allclose(frr, (~accept & same[None]).double().sum(1) / same.sum())


def test_ten_fold_protocol_picks_each_threshold_on_the_other_folds() -> None:
    # folds 0-8: genuine pairs score 0.8, impostors 0.2 -> any threshold in (0.2, 0.8] is perfect there;
    # fold 9 has genuine pairs at 0.45: its accuracy depends on the threshold taken from the others.
    scores = [torch.tensor([0.8, 0.8, 0.2, 0.2]) for _ in range(9)] + [torch.tensor([0.45, 0.45, 0.2, 0.2])]
    same = [torch.tensor([1, 1, 0, 0]) for _ in range(10)]
    res = protocol.ten_fold(scores, same)
    assert len(res) == 10 and all(r.auc == 1.0 and r.eer == 0.0 for r in res)
    assert res[9].threshold == pytest.approx(0.5)  # the midpoint of 0.2 and 0.8, best on folds 0-8
    assert res[9].accuracy == pytest.approx(0.5)  # 0.45 < 0.5: both genuine pairs rejected
    assert all(r.accuracy == 1.0 for r in res[:9])
    m, s = protocol.mean_std([r.accuracy for r in res])
    assert m == pytest.approx(0.95) and s == pytest.approx(math.sqrt((9 * 0.05**2 + 0.45**2) / 9))  # sample std (N - 1)


# ---------------------------------------------------------------------------------------------
# poses


def test_pose_yaws_and_parsing() -> None:
    assert standard_yaws(13) == [-90.0 + 15 * k for k in range(13)] and standard_yaws(9)[0] == -60.0
    labels = {"pose": torch.tensor([0, 1, 2, 1]), "yaw": torch.tensor([-15.0, 0.0, 15.0, 0.0])}
    yaws = pose_yaws(labels, 3)
    assert yaws == [-15.0, 0.0, 15.0] and frontal_pose(yaws, 3) == 1
    assert pose_yaws({"pose": torch.tensor([0, 1])}, 2) is None and frontal_pose(None, 2) == 0
    assert parse_yaws("15, -15", yaws, 3) == [2, 0]
    with pytest.raises(PoseError, match="-15, 0, 15"):
        parse_yaws("30", yaws, 3)
    with pytest.raises(PoseError, match="numbers"):
        parse_yaws("left", yaws, 3)
    assert parse_yaws("1,0", None, 2) == [1, 0]  # no angles (CFP): pose indices
    with pytest.raises(PoseError, match="indices 0..1"):
        parse_yaws("45", None, 2)
