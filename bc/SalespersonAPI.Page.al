// The salespeople of Business Central as tablesync reads and writes them. API v2.0
// has no salespeople entity, so this custom API page serves them at
//   <BC API root>/api/tablesync/integration/v1.0/companies(<company id>)/salespeople
// e.g. https://api.businesscentral.dynamics.com/v2.0/<tenant>/<environment>/api/tablesync/integration/v1.0/companies(<id>)/salespeople
// with the fields of services/tablesync/core/catalog.py (_BC_SALESPEOPLE) and the
// shape of the standard API pages: the record's SystemId as id, SystemModifiedAt as
// lastModifiedDateTime, an ETag per record, filters and paging from the platform.
//
// A salesperson created without a code (tablesync creates one per Dataverse user,
// as BC's own Dataverse integration does) gets the next SP00001, SP00002, ... code,
// as the emulator's number series gives them.
page 50100 "TS Salesperson API"
{
    PageType = API;
    APIPublisher = 'tablesync';
    APIGroup = 'integration';
    APIVersion = 'v1.0';
    EntityName = 'salesperson';
    EntitySetName = 'salespeople';
    EntityCaption = 'Salesperson';
    EntitySetCaption = 'Salespeople';
    SourceTable = "Salesperson/Purchaser";
    ODataKeyFields = SystemId;
    DelayedInsert = true;
    Extensible = false;

    layout
    {
        area(Content)
        {
            repeater(Records)
            {
                field(id; Rec.SystemId)
                {
                    Caption = 'Id';
                    Editable = false;
                }
                field("code"; Rec."Code")
                {
                    Caption = 'Code';
                }
                field(name; Rec.Name)
                {
                    Caption = 'Name';
                }
                field(email; Rec."E-Mail")
                {
                    Caption = 'Email';
                }
                field(phoneNo; Rec."Phone No.")
                {
                    Caption = 'Phone No.';
                }
                field(jobTitle; Rec."Job Title")
                {
                    Caption = 'Job Title';
                }
                field(blocked; Rec.Blocked)
                {
                    Caption = 'Blocked';
                }
                field(lastModifiedDateTime; Rec.SystemModifiedAt)
                {
                    Caption = 'Last Modified Date Time';
                    Editable = false;
                }
            }
        }
    }

    trigger OnInsertRecord(BelowxRec: Boolean): Boolean
    begin
        if Rec."Code" = '' then
            Rec."Code" := NextCode();
        // Inserted here, as the standard API pages do, so the answer to the POST
        // carries the record as stored; false keeps the page from inserting twice.
        Rec.Insert(true);
        exit(false);
    end;

    local procedure NextCode(): Code[20]
    var
        Salesperson: Record "Salesperson/Purchaser";
    begin
        Salesperson.SetFilter("Code", 'SP?????');
        if Salesperson.FindLast() then
            exit(IncStr(Salesperson."Code"));
        exit('SP00001');
    end;
}
