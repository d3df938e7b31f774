/**
 * The budget alert columns shared by tenant_quota and api_key_quota
 * (alert_webhook_url, alert_thresholds_percent), read and written as AlertSettings.
 */
import type { AlertSettings } from '../alerts/alert-settings';

export interface AlertSettingsRow {
  alert_webhook_url: string | null;
  alert_thresholds_percent: number[];
}

export function toAlertSettings(row: AlertSettingsRow): AlertSettings {
  return { webhookUrl: row.alert_webhook_url, thresholdsPercent: [...row.alert_thresholds_percent] };
}

/** The columns of the settings a patch sets; an absent field is left as it is (null clears the URL). */
export function alertColumns(patch: Partial<AlertSettings>): Partial<AlertSettingsRow> {
  const columns: Partial<AlertSettingsRow> = {};
  if (patch.webhookUrl !== undefined) columns.alert_webhook_url = patch.webhookUrl;
  if (patch.thresholdsPercent !== undefined) columns.alert_thresholds_percent = [...patch.thresholdsPercent];
  return columns;
}
