"""Download Derive's published PM2 golden cases, the ones marginopt's Derive tests check against.

    python scripts/fetch_derive_cases.py [DEST]      # default DEST: tests/data/derive-pm2

The cases are the exchange's (derivexyz/v2-core, Business Source License 1.1), so they are not
in this repository; this fetches them from its public repository at a pinned commit and checks
each file's git blob hash, so the tests always run on the same bytes. Standard library only.
"""

from __future__ import annotations

import hashlib
import sys
import urllib.request
from pathlib import Path

REPOSITORY = "derivexyz/v2-core"
COMMIT = "57cdd00b780d3a8cb50c707b061063a020b2119d"
FOLDER = "test/risk-managers/unit-tests/PMRM_2/portfolio_cases"
URL = f"https://raw.githubusercontent.com/{REPOSITORY}/{COMMIT}/{FOLDER}/{{name}}.json"
DEFAULT_DEST = Path(__file__).resolve().parents[1] / "tests" / "data" / "derive-pm2"

#: (case, git blob sha1 of its file at COMMIT)
CASES = (
    ("test_101_BasisContingencyParameters_FWD_CONT_SHOCK_UP_max", "00d02948f5c147cbfe7fca76ccf52ae841032fd4"),
    ("test_103_BasisContingencyParameters_FWD_CONT_SHOCK_DOWN_max", "a46a61eab1824468e98ca8799868d5af93269306"),
    ("test_105_BasisContingencyParameters_ADD_FACTOR_max", "ee15c99d8f55174d803dae70db989732c4677465"),
    ("test_107_BasisContingencyParameters_MULT_FACTOR_max", "005140016153a0fe3e5a1980747b0b84f79cd0ec"),
    ("test_109_OtherContingencyParameters_PEG_LOSS_THRESHOLD_max", "7d29b314b6d5d4e925e1fde045ba924766c2e8b5"),
    ("test_111_OtherContingencyParameters_PEG_LOSS_FACTOR_max", "524c06a75be0697d45570711c55689f89238b0ef"),
    ("test_113_OtherContingencyParameters_THRESHOLD_CONFIDENCE_max", "25f735523bfedb435bba0f19c616e531e1ecf2a9"),
    ("test_115_OtherContingencyParameters_CONFIDENCE_SCALE_max", "067e051afd8e01c515d22068e107b4b5312494f9"),
    ("test_117_OtherContingencyParameters_MMPerpPercent_max", "286f71060f56d5edea00c6752e8c44da51eda5a2"),
    ("test_119_OtherContingencyParameters_IMPerpPercent_max", "89ec01fb543da42f4e39893bf2b60bd36db0f27e"),
    ("test_11_collateral_usdc_depeg_only_cash", "566cfdccc53202e1ad9f8327f14ac0bf3416e4c7"),
    ("test_121_OtherContingencyParameters_MMOptionPercent_max", "8a2101ada2e7e14d35992d5f0e61d128e02c9717"),
    ("test_123_OtherContingencyParameters_IMOptionPercent_max", "347360324562e54627c0523f38e6f433d104ba20"),
    ("test_125_SkewShockParameters_LINEAR_SCALE_CAP_max", "c009de7fa01a932de6a71c63fd91d6c55a940963"),
    ("test_127_SkewShockParameters_ABS_SCALE_CAP_max", "02fd432fd4dbb5dbd3f319ce64268215b75f4728"),
    ("test_129_SkewShockParameters_LINEAR_CBASE_max", "0b8b8dacce90c2775ebdac51f27344d0c323ffc4"),
    ("test_131_SkewShockParameters_ABS_CBASE_max", "110c6a86b52171124b0b0d0feca6927b1bfc5c40"),
    ("test_133_SkewShockParameters_MIN_K_STAR_max", "859a678e88783a7b729655346d8b0fb3b94ce8dc"),
    ("test_135_SkewShockParameters_MIN_WIDTH_SCALE_max", "f24eeb013bb699759bca604fc89ae15f5e58818e"),
    ("test_137_SkewShockParameters_VOL_PARAM_1_max", "93d7bb3ec525dcead934064ddc4777e307358c9e"),
    ("test_139_SkewShockParameters_VOL_PARAM_2_max", "f2e17e8b4ddf912ea2d8528f1da02b0f7c3ad719"),
    ("test_13_risk_cancelling_btc_covered_call", "10981df869782837128cde726751c55fb1348016"),
    ("test_15_risk_cancelling_eth_call_with_btc_collat", "e785d3bdd4543e6dbfe7940c0d4286d5b338084f"),
    ("test_17_risk_cancelling_revert_risk_cancelling_to_2", "e611540aa84bf7ce806d98370ad585e101d3a69d"),
    ("test_19_structures_ITM_call_spread", "3740699f32b99ba7330ad78a0f0104148b9dd89d"),
    ("test_1_collateral_cash_only", "6ee61ed731da59ea57bb6518d41eb3037e39adf7"),
    ("test_21_structures_long_fly", "f10914243bfe2764a0c942c7b3cf55a037341d9f"),
    ("test_23_structures_short_box", "4d695dd7a75ea80e2a7bac219d48509d593eff46"),
    ("test_25_structures_risk_reversal_dn", "8c30f6e5c163e7706f0f53a2796f739d16987762"),
    ("test_27_structures_revert_20_short_box", "d80e130a7f67879eaf2e949edefccef78126972f"),
    ("test_29_perps_basic_perp", "c9f54af490dbf085955c377fce6f356aafeb31f0"),
    ("test_31_perps_basic_perp_low_confidence_2", "7fe6c182a49bb013319473f4bfa5c14fa0c93f82"),
    ("test_33_perps_general_perp_hedging", "2f0c86867d816b3daafb80b4ec4d41c8f870b0c1"),
    ("test_35_tails_general_tail_test", "03d4e218a5a292861875636e39feb6f051b084b2"),
    ("test_37_tails_tails_revert_to_2", "f81d3b2ea2c259fe76c67c603a22515c6a5bedfc"),
    ("test_39_tails_slightly_otm_call", "99ea685e9d000f265ee32d184745c98f8e36057b"),
    ("test_3_collateral_multiple_stables", "34fa4d7d4ead29d01017d3e2fde25856ce4cd7fc"),
    ("test_41_skews_linear_as_worst_case_simple", "d16f62d1d4b25e15d1f5c6c9cf6f2b4f3ed7180d"),
    ("test_43_skews_linear_as_worst_case_complex", "c7eaf00b958e6598c0f827bcc71306486a5c18f3"),
    ("test_45_skews_linear_skew_revert_to_2", "f4f454581ac3dd41f28515de40f88352c904ca56"),
    ("test_47_v20_remnants_v20_test_3_itm_call_spread", "6ba80d00af623f8124a0b942edf9f882a93cf0d1"),
    ("test_49_v20_remnants_v20_test_6_low_perp_conf_no_impact", "462a564aa5dff85dece5328510f798636edf83a1"),
    ("test_51_discounting_simple_discounting_long", "b139837cea8a85909955f3de681e9062f83ba19e"),
    ("test_53_discounting_turn_off_discounting", "aff7de4cb3d6ce07a898af4a2084eb630fb709ee"),
    ("test_55_discounting_negative_rate", "217dc855218876f4efee6c161471c400ec213269"),
    ("test_57_forward_cont_forward_cont_2", "cc17908e10750f85c317710ba0b0f1af78184811"),
    ("test_59_min_shock_check_vol_bounded_at_0", "500ea2b3aef331ab6d751d085759b0652a8905c3"),
    ("test_5_collateral_general_multi_collat", "c1047a725820eea5d6d956de25a5f2b6a9e279c7"),
    ("test_61_general_general_test_1", "74d4ecc9e0879f7394bf18b5deb044cb05e7d6df"),
    ("test_63_general_random_3", "5ac169a5ba9598339dade1c6732ddde502d5e332"),
    ("test_65_general_random_5", "b05690d0458fff26fd1018edcf9ed58ac973cf36"),
    ("test_67_misc_skew_scenario_with_spot_move", "f22afc688c2c60f5f0f17b05aa83e963cf14dfd2"),
    ("test_69_misc_change_dte_min", "0eb429abfcb941832ed65de914288f1f1e13869e"),
    ("test_71_misc_super_itm_spread", "b1d3425c16a8a081fe30b7732f44aed4362bd22d"),
    ("test_73_VolShockParameters_VOLRANGEUP_max", "3d3c4472b91fd4138de38343c4f09b0baf97ff5e"),
    ("test_75_VolShockParameters_VOLRANGEDOWN_max", "b47643feccb5c32dddf448c6bc4a1892f5db8cd8"),
    ("test_77_VolShockParameters_SHORTTERMPOWER_max", "8bc1e36200b0a2f939ca5cff85fa98bad8658d70"),
    ("test_79_VolShockParameters_LONGTERMPOWER_max", "3014f48ae8861db91144ac552afd032a8be4137f"),
    ("test_7_collateral_only_base_risk_cancelling", "73baa177f9e3ff74f63d65f9b6855f27a6558f89"),
    ("test_81_VolShockParameters_DTE_FLOOR_max", "fa667c1798a49bc24dd99d2d89be8443b4a1a40c"),
    ("test_83_VolShockParameters_MIN_VOL_EVAL_SHOCKED_max", "79485648e5fd3b659963be55cd5e8711a1a20b0c"),
    ("test_85_MarginParameters_IM_LOSS_FACTOR_max", "92ed2baa276aab4ea9a5b86186f64511be17b475"),
    ("test_87_MarginParameters_MM_LOSS_FACTOR_max", "ff61827615911224a95e2e3a1a108cb17e6ab859"),
    ("test_89_MarginParameters_RFR_FACTOR1_NEG_max", "22ff9c2c9fcd64a3c21cabc135b25f2072d7163d"),
    ("test_91_MarginParameters_RFR_FACTOR1_POS_max", "bda87358166b1741ff3a16b960e4873b408c3d70"),
    ("test_93_MarginParameters_RFR_FACTOR2_NEG_max", "99b561a63e61c00bab271a84087248c34c8c43a4"),
    ("test_95_MarginParameters_RFR_FACTOR2_POS_max", "8cf5462f22c93dec55f91719ffac39cd4d2a6db8"),
    ("test_97_MarginParameters_STATIC_DISCOUNT_max", "e23ae6f6f2b2b0f47284c41a7b93052259c6803e"),
    ("test_99_MarginParameters_STATIC_DISCOUNT_NEG_max", "7d0f0ca5c4e3982f7b2b4ed3352108ebf284e100"),
    ("test_9_collateral_general_revert_to_2", "21c67ab1ee20b68d5332d48127518b11356b0b68"),
)


def blob_sha1(data: bytes) -> str:
    """The hash git gives a file's content (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def main(argv: list[str]) -> int:
    dest = Path(argv[1]) if len(argv) > 1 else DEFAULT_DEST
    dest.mkdir(parents=True, exist_ok=True)
    for name, sha in CASES:
        path = dest / f"{name}.json"
        if path.exists() and blob_sha1(path.read_bytes()) == sha:
            continue
        try:
            with urllib.request.urlopen(URL.format(name=name), timeout=60) as response:
                data = response.read()
        except OSError as exc:
            print(f"{name}: cannot download {URL.format(name=name)} ({exc})", file=sys.stderr)
            return 1
        if blob_sha1(data) != sha:
            print(f"{name}: the downloaded file is not the pinned one", file=sys.stderr)
            return 1
        path.write_bytes(data)
    print(f"{len(CASES)} golden cases in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
