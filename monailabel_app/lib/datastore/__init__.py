"""The campaign datastore: MONAI Label's local datastore with label versions, provenance and weak labels."""

from lib.datastore.campaign_datastore import LABEL_VERSIONS_KEY, RUNTIME_DIR, CampaignDatastore, check_label_tag
from lib.datastore.provenance import LABEL_METHODS, LabelProvenance, provenance_from_params
from lib.datastore.weak_labels import UNCERTAIN, WEAK_LABEL_KEY, import_label_table, parse_weak_label, weak_label_of

__all__ = ["CampaignDatastore", "LABEL_VERSIONS_KEY", "RUNTIME_DIR", "check_label_tag", "LABEL_METHODS",
           "LabelProvenance", "provenance_from_params", "UNCERTAIN", "WEAK_LABEL_KEY", "import_label_table",
           "parse_weak_label", "weak_label_of"]
