# /etc/profile.d/banalytics-box.sh (package banalytics-box): the box's home
# for operators' shells, so that `banalytics-box status` needs no --home.
# The service sets it in its unit.
BANALYTICS_HOME=/var/lib/banalytics
export BANALYTICS_HOME
