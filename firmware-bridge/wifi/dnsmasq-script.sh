#!/bin/sh
# dnsmasq --dhcp-script hook: forwards lease add/old/del with the DNSMASQ_*
# fingerprint fields to the Tallybox agent's local event socket. Install:
#   dnsmasq --dhcp-script=/opt/tallybox/firmware-bridge/wifi/dnsmasq-script.sh --dhcp-scriptuser=tallybox
# (or dhcp-script= / dhcp-scriptuser= in dnsmasq.conf). dnsmasq runs it as:
# SCRIPT add|old|del MAC IP [HOSTNAME], and also for init/tftp/arp events,
# which are not presence.
case "$1" in
  add|old|del) ;;
  *) exit 0 ;;
esac
exec "${TALLYBOX_NODE:-node}" "$(dirname "$0")/forward.mjs" dnsmasq-script "$@"
