#!/bin/sh
# hostapd_cli action script: forwards station joins and leaves to the Tallybox
# agent (C1 role) over its local event socket. Install:
#   hostapd_cli -B -p /var/run/hostapd -i wlan0 -a /opt/tallybox/firmware-bridge/wifi/hostapd-action.sh
# hostapd_cli runs it as: SCRIPT IFACE EVENT MAC [more args]. Only joins and
# leaves are forwarded (a busy AP sends many other events).
# TALLYBOX_WIFI_SOCKET: the agent's socket (default /run/tallybox/wifi/events.sock).
case "$2" in
  AP-STA-CONNECTED|AP-STA-DISCONNECTED) ;;
  *) exit 0 ;;
esac
exec "${TALLYBOX_NODE:-node}" "$(dirname "$0")/forward.mjs" hostapd-cli "$1" "$2" "$3"
